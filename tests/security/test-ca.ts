/**
 * A throw-away certificate authority made with the openssl CLI for the TLS
 * tests: a CA, and leaf certificates for 127.0.0.1/localhost (server and
 * client use), each with a distinct serial so a test can tell which one a
 * server presents.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestCa {
  dir: string;
  caCert: string;
  caKey: string;
}

export interface Leaf {
  cert: string;
  key: string;
  serial: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: "pipe" });
}

export function makeCa(name = "streamsink test CA"): TestCa {
  const dir = mkdtempSync(join(tmpdir(), "streamsink-ca-"));
  const caKey = join(dir, "ca.key");
  const caCert = join(dir, "ca.crt");
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", caKey, "-out", caCert, "-days", "2", "-subj", `/CN=${name}`], dir);
  return { dir, caCert, caKey };
}

let nextSerial = 0x1000 + Math.floor(Math.random() * 0xffff);

/** A leaf signed by `ca` for 127.0.0.1 and localhost; `name` picks the file names and the CN. */
export function issue(ca: TestCa, name: string): Leaf {
  const key = join(ca.dir, `${name}.key`);
  const csr = join(ca.dir, `${name}.csr`);
  const cert = join(ca.dir, `${name}.crt`);
  const ext = join(ca.dir, `${name}.ext`);
  const serial = (nextSerial++).toString(16).toUpperCase();
  writeFileSync(ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n");
  openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr, "-subj", `/CN=${name}`], ca.dir);
  openssl(["x509", "-req", "-in", csr, "-CA", ca.caCert, "-CAkey", ca.caKey, "-set_serial", `0x${serial}`, "-days", "2", "-out", cert, "-extfile", ext], ca.dir);
  return { cert, key, serial };
}
