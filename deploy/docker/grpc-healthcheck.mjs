// Docker HEALTHCHECK of the worker image: exit 0 when the worker's
// grpc.health.v1 service answers SERVING on its own gRPC port.
import { StreamsinkClient } from "../../dist/services/grpc/grpc-client.js";

const address = `127.0.0.1:${process.env.STREAMSINK_GRPC_PORT || "50051"}`;
try {
  const client = await StreamsinkClient.connect(address, { readyTimeoutMs: 3000 });
  const status = await client.health("");
  client.close();
  process.exit(status === "SERVING" ? 0 : 1);
} catch {
  process.exit(1);
}
