/**
 * A strict reader of the Prometheus text exposition format (0.0.4) for tests:
 * samples by name and labels, and the checks Prometheus itself makes (one
 * HELP/TYPE per family, a family's lines together, parseable values).
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  samples: Sample[];
  /** Family name -> TYPE. */
  types: Map<string, string>;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/g;

/** The family a sample belongs to (histogram and summary series carry suffixes). */
function familyOf(name: string, types: Map<string, string>): string {
  for (const suffix of ["_bucket", "_count", "_sum"]) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      const t = types.get(base);
      if (t === "histogram" || t === "summary") return base;
    }
  }
  return name;
}

export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const closed = new Set<string>();
  let current: string | undefined;
  const enter = (family: string, line: string) => {
    if (family === current) return;
    if (closed.has(family)) throw new Error(`family ${family} appears twice (at "${line}")`);
    if (current !== undefined) closed.add(current);
    current = family;
  };
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    if (line.startsWith("# HELP ")) {
      const name = line.split(" ")[2]!;
      if (helps.has(name)) throw new Error(`two HELP lines for ${name}`);
      helps.add(name);
      enter(name, line);
      continue;
    }
    if (line.startsWith("# TYPE ")) {
      const [, , name, type] = line.split(" ");
      if (types.has(name!)) throw new Error(`two TYPE lines for ${name}`);
      types.set(name!, type!);
      enter(name!, line);
      continue;
    }
    if (line.startsWith("#")) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not a sample line: "${line}"`);
    const labels: Record<string, string> = {};
    if (m[3]) for (const l of m[3].matchAll(LABEL)) labels[l[1]!] = l[2]!;
    // Prometheus parses values like Go's ParseFloat: NaN and Inf in any case.
    const raw = m[4]!.toLowerCase();
    const value = raw === "+inf" || raw === "inf" ? Infinity : raw === "-inf" ? -Infinity : raw === "nan" ? NaN : Number(raw);
    if (Number.isNaN(value) && raw !== "nan") throw new Error(`bad value in "${line}"`);
    enter(familyOf(m[1]!, types), line);
    samples.push({ name: m[1]!, labels, value });
  }
  return { samples, types };
}

/** The value of the one sample with this name whose labels include `labels`; undefined when none. */
export function valueOf(e: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const found = e.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

/** Every sample with this name. */
export function samplesOf(e: Exposition, name: string): Sample[] {
  return e.samples.filter((s) => s.name === name);
}
