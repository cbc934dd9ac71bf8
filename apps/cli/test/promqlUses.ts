import { parser } from "@prometheus-io/lezer-promql";
import type { MetricFamily } from "@fleet/testing/promScrape";

/**
 * What a PromQL expression needs from a scrape, read with Prometheus' own grammar
 * (@prometheus-io/lezer-promql): the series it selects, the label matchers on each, and the
 * labels it groups or matches on. `problems()` checks all of it against real scrapes.
 */
export interface QueryUses {
  selectors: Array<{ series: string; matchers: Array<{ label: string; op: string; value: string }> }>;
  /** Labels named in by/without/on/ignoring/group_left/group_right. */
  grouping: string[];
  syntaxErrors: string[];
}

export function queryUses(expr: string): QueryUses {
  const tree = parser.parse(expr);
  const uses: QueryUses = { selectors: [], grouping: [], syntaxErrors: [] };
  const text = (from: number, to: number) => expr.slice(from, to);
  const cursor = tree.cursor();
  do {
    if (cursor.type.isError) uses.syntaxErrors.push(`syntax error at ${cursor.from}: ${JSON.stringify(expr.slice(cursor.from, cursor.from + 20))}`);
    if (cursor.name === "VectorSelector") {
      const node = cursor.node;
      const series = node.getChild("Identifier");
      const matchers = node.getChild("LabelMatchers")?.getChildren("UnquotedLabelMatcher") ?? [];
      uses.selectors.push({
        series: series ? text(series.from, series.to) : "",
        matchers: matchers.map((m) => {
          const label = m.getChild("LabelName")!;
          const op = m.getChild("MatchOp")!;
          const value = m.getChild("StringLiteral")!;
          return { label: text(label.from, label.to), op: text(op.from, op.to), value: JSON.parse(text(value.from, value.to)) as string };
        }),
      });
    }
    if (cursor.name === "GroupingLabels") {
      for (const l of cursor.node.getChildren("LabelName")) uses.grouping.push(text(l.from, l.to));
    }
  } while (cursor.next());
  return uses;
}

/** Labels Prometheus adds to every series at scrape time (not in a /metrics body). */
export const TARGET_LABELS = ["job", "instance"];

/**
 * Everything `expr` uses that the scraped families do not have: an unknown series, a label no
 * sample of that series carries, an `=` value no sample has, a regex no sample value matches,
 * a grouping label none of the selected series carries.
 */
export function queryProblems(expr: string, families: Map<string, MetricFamily>): string[] {
  const uses = queryUses(expr);
  const problems = [...uses.syntaxErrors];
  const samplesOf = (series: string) => [...families.values()].flatMap((f) => f.samples.filter((s) => s.series === series));
  const selectedLabels = new Set<string>(TARGET_LABELS);
  for (const { series, matchers } of uses.selectors) {
    const samples = samplesOf(series);
    if (samples.length === 0) {
      problems.push(`${series}: not in any scrape`);
      continue;
    }
    for (const s of samples) for (const l of Object.keys(s.labels)) selectedLabels.add(l);
    for (const m of matchers) {
      const values = samples.map((s) => s.labels[m.label]).filter((v): v is string => v !== undefined);
      if (values.length === 0) problems.push(`${series}: no label ${m.label}`);
      else if (m.op === "=" && !values.includes(m.value)) problems.push(`${series}{${m.label}="${m.value}"}: no such value (has ${[...new Set(values)].join(", ")})`);
      else if (m.op === "=~" && !values.some((v) => new RegExp(`^(?:${m.value})$`).test(v))) problems.push(`${series}{${m.label}=~"${m.value}"}: matches no value`);
    }
  }
  for (const label of uses.grouping) if (!selectedLabels.has(label)) problems.push(`grouping label ${label}: on none of the selected series`);
  return problems;
}
