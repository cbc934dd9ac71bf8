/**
 * Reads a Prometheus text exposition (what /metrics answers) into metric families, and lists
 * what breaks Prometheus' naming rules, so tests can hold every scrape to them.
 */
export interface MetricFamily {
  name: string;
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  help: string;
  /** Every sample: its series name (`x_bucket` for a histogram `x`) and labels. */
  samples: Array<{ series: string; labels: Record<string, string>; value: number }>;
}

export function parseScrape(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  const family = (name: string) => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, type: "untyped", help: "", samples: [] }));
    return f;
  };
  for (const line of text.split("\n")) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      if (meta[1] === "TYPE") family(meta[2]!).type = meta[3] as MetricFamily["type"];
      else family(meta[2]!).help = meta[3]!;
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const series = m[1]!;
    const labels = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1]!, x[2]!]));
    const base = families.has(series) ? series : series.replace(/_(bucket|sum|count)$/, "");
    family(base).samples.push({ series, labels, value: Number(m[3]) });
  }
  return families;
}

/**
 * Naming rules (prometheus.io/docs/practices/naming): counters end in `_total`, nothing else
 * does; no `fleet_` prefix on the standard process/Node metrics; base units (seconds, bytes),
 * never milliseconds or kilobytes; every metric has help text.
 */
export function namingProblems(families: Map<string, MetricFamily>): string[] {
  const problems: string[] = [];
  for (const f of families.values()) {
    if (f.type === "counter" && !f.name.endsWith("_total")) problems.push(`${f.name}: a counter without _total`);
    if (f.type !== "counter" && f.name.endsWith("_total")) problems.push(`${f.name}: a ${f.type} named _total`);
    if (/_(ms|milliseconds|msec|kb|kib|mb|mib|minutes|hours)(_|$)/.test(f.name)) problems.push(`${f.name}: not in base units`);
    if (/^fleet_.*(process|nodejs)_/.test(f.name)) problems.push(`${f.name}: a standard metric under a Fleet prefix`);
    if (f.help.trim() === "") problems.push(`${f.name}: no help text`);
    if (f.type === "untyped") problems.push(`${f.name}: no TYPE`);
  }
  return problems;
}
