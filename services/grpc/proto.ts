/**
 * The streamsink.v1 contract loaded at run time from the package's proto/
 * directory with @grpc/proto-loader (no generated code to keep in step with
 * the .proto). The loader options here decide the object shapes described in
 * messages.ts; server and client both load through this file.
 */
import { dirname, join } from "node:path";

import * as protoLoader from "@grpc/proto-loader";

import { packageRoot } from "../package-root.js";
import { protoPath as healthProtoPath } from "grpc-health-check";

import type {
  AppendRequestMessage,
  AppendResponseMessage,
  CloseSessionRequestMessage,
  CloseSessionResponseMessage,
  GenerateRequestMessage,
  GenerateResponseMessage,
  GetSessionRequestMessage,
  SessionInfoMessage,
  StreamRequestMessage,
  StreamResponseMessage,
} from "./messages.js";

export const PACKAGE_NAME = "streamsink.v1";
export const SERVICE_NAME = `${PACKAGE_NAME}.StreamingLLM`;
export const HEALTH_SERVICE_NAME = "grpc.health.v1.Health";

/** camelCase fields, enum names, numbers for 64-bit integers, defaults, oneof markers. */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

const STREAMSINK_PROTO = "streamsink/v1/streamsink.proto";
const HEALTH_PROTO = "health/v1/health.proto";

export interface StreamsinkMethods {
  append: protoLoader.MethodDefinition<AppendRequestMessage, AppendResponseMessage>;
  generate: protoLoader.MethodDefinition<GenerateRequestMessage, GenerateResponseMessage>;
  stream: protoLoader.MethodDefinition<StreamRequestMessage, StreamResponseMessage>;
  getSession: protoLoader.MethodDefinition<GetSessionRequestMessage, SessionInfoMessage>;
  closeSession: protoLoader.MethodDefinition<CloseSessionRequestMessage, CloseSessionResponseMessage>;
}

export interface StreamsinkProto {
  /** streamsink.v1 plus grpc.health.v1: what server reflection describes. */
  packageDefinition: protoLoader.PackageDefinition;
  service: protoLoader.ServiceDefinition;
  methods: StreamsinkMethods;
}


/** The directory holding streamsink/v1/streamsink.proto. */
export function protoDir(): string {
  return join(packageRoot(), "proto");
}

let cached: StreamsinkProto | undefined;

export function streamsinkProto(): StreamsinkProto {
  if (cached) return cached;
  // health.proto sits at <include dir>/health/v1/health.proto in its package.
  const healthInclude = dirname(dirname(dirname(healthProtoPath)));
  const packageDefinition = protoLoader.loadSync([STREAMSINK_PROTO, HEALTH_PROTO], {
    ...LOADER_OPTIONS,
    includeDirs: [protoDir(), healthInclude],
  });
  const service = packageDefinition[SERVICE_NAME];
  if (!service || !("Append" in service)) throw new Error(`${STREAMSINK_PROTO} does not define ${SERVICE_NAME}`);
  const method = <Req, Res>(name: string): protoLoader.MethodDefinition<Req, Res> => {
    const definition = (service as protoLoader.ServiceDefinition)[name];
    if (!definition) throw new Error(`${SERVICE_NAME} has no method ${name}`);
    return definition as unknown as protoLoader.MethodDefinition<Req, Res>;
  };
  cached = {
    packageDefinition,
    service: service as protoLoader.ServiceDefinition,
    methods: {
      append: method("Append"),
      generate: method("Generate"),
      stream: method("Stream"),
      getSession: method("GetSession"),
      closeSession: method("CloseSession"),
    },
  };
  return cached;
}
