// Prints the README's configuration table from the apps' zod schemas (after `npm run build`):
//   node scripts/config-reference.js
// apps/cli/test/docs.test.ts fails when the README and the schemas disagree.
const { describeConfig } = require("../packages/core/dist/config.js");
const apps = {
  worker: require("../apps/worker/dist/config.js").workerSchema,
  scheduler: require("../apps/scheduler/dist/config.js").schedulerSchema,
  cli: require("../apps/cli/dist/config.js").cliSchema,
  dashboard: require("../apps/dashboard/dist/config.js").dashboardSchema,
};
const rows = new Map();
for (const [app, schema] of Object.entries(apps)) {
  for (const v of describeConfig(schema)) {
    const row = rows.get(v.name) ?? { ...v, apps: [], defaults: new Map() };
    row.apps.push(app);
    row.defaults.set(app, v.default);
    rows.set(v.name, row);
  }
}
const esc = (s) => s.replace(/\|/g, "\\|");
console.log("| variable | default | used by | meaning |\n|---|---|---|---|");
for (const r of rows.values()) {
  const show = (d) => (d === undefined ? "—" : "`" + esc(d) + "`");
  const first = r.defaults.get(r.apps[0]);
  const others = [...r.defaults.entries()].filter(([, d]) => d !== first).map(([app, d]) => `${app}: ${show(d)}`);
  const def = show(first) + (others.length ? ` (${others.join(", ")})` : "");
  const secret = r.secret ? ` (secret: or \`${r.name}_FILE\`)` : "";
  console.log(`| \`${r.name}\` | ${def} | ${r.apps.join(", ")} | ${esc(r.description)}${secret} |`);
}
