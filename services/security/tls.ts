/**
 * gRPC TLS from certificate files, reloaded without a restart.
 *
 * The server side uses grpc-js's certificate providers: a file watcher
 * re-reads the certificate, key and client CA every `refreshMs` and the
 * server swaps its secure context, so a rotated certificate (cert-manager
 * rewriting a mounted Secret) is served to the next connection while open
 * connections carry on. With a client CA the server requires and verifies a
 * client certificate (mutual TLS).
 *
 * The client side (a worker forwarding to another, the CLI) reads the files
 * when it opens a channel, so a reconnect picks up rotated files too.
 */
import { readFileSync } from "node:fs";

import { ChannelCredentials, experimental, type ServerCredentials } from "@grpc/grpc-js";

export interface ServerTlsFiles {
  certFile: string;
  keyFile: string;
  /** CA that signs client certificates; set = mutual TLS (client certificates required). */
  clientCaFile?: string;
  /** How often the files are re-read. Default 10 s. */
  refreshMs?: number;
}

export interface ClientTlsFiles {
  /** CA that signs the server certificates; absent = the system's roots. */
  caFile?: string;
  /** Client certificate and key, for servers that require mutual TLS. */
  certFile?: string;
  keyFile?: string;
}

export class TlsConfigError extends Error {
  override readonly name = "TlsConfigError";
  readonly code = "E_CONFIG";
}

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new TlsConfigError(`cannot read the ${what} ${path}: ${(err as Error).message}`);
  }
}

/** Server credentials that follow the files; the files are read once here so a bad path fails at start. */
export function watchedServerCredentials(files: ServerTlsFiles): ServerCredentials {
  read(files.certFile, "TLS certificate");
  read(files.keyFile, "TLS key");
  if (files.clientCaFile) read(files.clientCaFile, "client CA");
  const refreshIntervalMs = files.refreshMs ?? 10_000;
  const identity = new experimental.FileWatcherCertificateProvider({ certificateFile: files.certFile, privateKeyFile: files.keyFile, refreshIntervalMs });
  const clientCa = files.clientCaFile ? new experimental.FileWatcherCertificateProvider({ caCertificateFile: files.clientCaFile, refreshIntervalMs }) : null;
  // grpc-js 1.14 declares (ca, identity, requireClientCert) but passes its first
  // argument on as the identity provider and its second as the CA: pass them
  // in the order the implementation uses.
  const create = experimental.createCertificateProviderServerCredentials as unknown as (
    identity: experimental.CertificateProvider,
    ca: experimental.CertificateProvider | null,
    requireClientCertificate: boolean,
  ) => ServerCredentials;
  return create(identity, clientCa, clientCa !== null);
}

/** Channel credentials from files read now. */
export function clientCredentials(files: ClientTlsFiles): ChannelCredentials {
  if ((files.certFile === undefined) !== (files.keyFile === undefined)) throw new TlsConfigError("a client certificate needs both the certificate and the key file");
  return ChannelCredentials.createSsl(
    files.caFile ? read(files.caFile, "CA certificate") : null,
    files.keyFile ? read(files.keyFile, "client key") : null,
    files.certFile ? read(files.certFile, "client certificate") : null,
  );
}
