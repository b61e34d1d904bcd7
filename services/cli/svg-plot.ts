/**
 * Minimal SVG line charts for benchmark results (no plotting dependency):
 * one chart per panel, log-scaled y when values span decades.
 */

export interface Series {
  label: string;
  points: Array<[number, number]>;
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  logY?: boolean;
  logX?: boolean;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const W = 520;
const H = 360;
const M = { left: 70, right: 20, top: 36, bottom: 50 };

function escape(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function ticks(lo: number, hi: number, log: boolean): number[] {
  if (log) {
    const out: number[] = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e);
    return out.filter((t) => t >= lo / 1.0001 && t <= hi * 1.0001);
  }
  const step = 10 ** Math.floor(Math.log10((hi - lo) / 4 || 1));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= 6) ?? step * 10;
  const out: number[] = [];
  for (let t = Math.ceil(lo / nice) * nice; t <= hi + 1e-9; t += nice) out.push(Number(t.toPrecision(6)));
  return out;
}

function panelSvg(p: Panel, offsetX: number): string {
  const xs = p.series.flatMap((s) => s.points.map((q) => q[0]));
  const ys = p.series.flatMap((s) => s.points.map((q) => q[1])).filter((v) => v > 0 || !p.logY);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (p.logY) [y0, y1] = [10 ** Math.floor(Math.log10(y0)), 10 ** Math.ceil(Math.log10(y1))];
  else [y0, y1] = [0, y1 * 1.1];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  const fx = (x: number) =>
    offsetX + M.left + ((p.logX ? Math.log(x / x0) / Math.log(x1 / x0) : (x - x0) / (x1 - x0)) * (W - M.left - M.right));
  const fy = (y: number) =>
    M.top + (1 - (p.logY ? Math.log(y / y0) / Math.log(y1 / y0) : (y - y0) / (y1 - y0))) * (H - M.top - M.bottom);
  const parts: string[] = [];
  parts.push(`<text x="${offsetX + W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${escape(p.title)}</text>`);
  parts.push(`<rect x="${offsetX + M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" fill="none" stroke="#333"/>`);
  for (const t of ticks(y0, y1, p.logY ?? false)) {
    parts.push(`<line x1="${offsetX + M.left}" x2="${offsetX + W - M.right}" y1="${fy(t)}" y2="${fy(t)}" stroke="#ddd"/>`);
    parts.push(`<text x="${offsetX + M.left - 6}" y="${fy(t) + 4}" text-anchor="end" font-size="11">${t}</text>`);
  }
  for (const t of [...new Set(xs)].sort((a, b) => a - b)) {
    parts.push(`<text x="${fx(t)}" y="${H - M.bottom + 16}" text-anchor="middle" font-size="11">${t}</text>`);
  }
  parts.push(`<text x="${offsetX + W / 2}" y="${H - 10}" text-anchor="middle" font-size="12">${escape(p.xLabel)}</text>`);
  parts.push(
    `<text x="${offsetX + 16}" y="${H / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 ${offsetX + 16} ${H / 2})">${escape(p.yLabel)}</text>`,
  );
  p.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    const pts = s.points.filter((q) => !p.logY || q[1] > 0).sort((a, b) => a[0] - b[0]);
    parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map((q) => `${fx(q[0])},${fy(q[1])}`).join(" ")}"/>`);
    for (const q of pts) parts.push(`<circle cx="${fx(q[0])}" cy="${fy(q[1])}" r="3" fill="${color}"/>`);
    parts.push(`<rect x="${offsetX + M.left + 10}" y="${M.top + 8 + i * 16}" width="10" height="10" fill="${color}"/>`);
    parts.push(`<text x="${offsetX + M.left + 24}" y="${M.top + 17 + i * 16}" font-size="11">${escape(s.label)}</text>`);
  });
  return parts.join("\n");
}

export function renderSvg(panels: Panel[], caption: string): string {
  const width = W * panels.length;
  const body = panels.map((p, i) => panelSvg(p, i * W)).join("\n");
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${H + 24}" font-family="sans-serif">\n` +
    `<rect width="100%" height="100%" fill="white"/>\n${body}\n` +
    `<text x="10" y="${H + 16}" font-size="11" fill="#555">${escape(caption)}</text>\n</svg>\n`
  );
}
