import { join } from "node:path";
import ts from "typescript";
import type { K8sObject } from "./kustomize";

/**
 * Validates rendered manifests against the Kubernetes API's schemas, offline, with the
 * `kubernetes-models` packages (generated from the API's OpenAPI spec; KEDA's and the
 * Prometheus Operator's from their CRDs):
 * - their JSON-schema validators check types, required fields, enums and formats;
 * - those validators accept unknown fields (a typo such as `securityContex` would pass), while
 *   the API server rejects them (kubectl's default strict field validation), so the same
 *   objects are also type-checked against the packages' closed TypeScript interfaces, whose
 *   excess-property check catches every unknown field.
 */
const REPO = join(__dirname, "..", "..", "..");

function modulePath(o: K8sObject): string {
  const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
  if (group === "keda.sh") return `@kubernetes-models/keda/keda.sh/${version}/${o.kind}`;
  if (group === "monitoring.coreos.com") return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/${version}/${o.kind}`;
  return `kubernetes-models/${group ? `${group}/` : ""}${version}/${o.kind}`;
}

/** Schema problems of each object ("Kind/name: path message"); empty when all are valid. */
export function schemaProblems(objects: readonly K8sObject[]): string[] {
  const problems: string[] = [];
  for (const o of objects) {
    const where = `${o.kind}/${o.metadata?.name}`;
    let Model: new (data: unknown) => { validate(): void };
    try {
      Model = (require(modulePath(o)) as Record<string, new (data: unknown) => { validate(): void }>)[o.kind]!;
    } catch {
      problems.push(`${where}: no schema for ${o.apiVersion} ${o.kind}`);
      continue;
    }
    try {
      new Model(structuredClone(o)).validate();
    } catch (err) {
      problems.push(`${where}: ${(err as Error).message}`);
    }
  }
  return [...problems, ...unknownFields(objects)];
}

/** Type-checks `const x: IKind = <object>` for every object; reports each diagnostic. */
function unknownFields(objects: readonly K8sObject[]): string[] {
  const file = join(REPO, "deploy", "__rendered_manifests__.ts");
  const lines: string[] = [];
  objects.forEach((o, i) => {
    lines.push(`import type { I${o.kind} as T${i} } from "${modulePath(o)}";`);
  });
  objects.forEach((o, i) => {
    lines.push(`// ${o.kind}/${o.metadata?.name}`, `export const m${i}: T${i} = ${JSON.stringify(o, null, 1)};`);
  });
  const source = lines.join("\n");
  const options: ts.CompilerOptions = { strict: true, noEmit: true, skipLibCheck: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10, types: [] };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, language, onError) => (name === file ? ts.createSourceFile(name, source, language) : getSourceFile(name, language, onError));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, "\n");
    if (!d.file || d.start === undefined) return text;
    const { line } = d.file.getLineAndCharacterOfPosition(d.start);
    const srcLines = d.file.text.split("\n");
    let header = line;
    while (header > 0 && !srcLines[header]!.startsWith("// ")) header--;
    return `${srcLines[header]!.slice(3)} (line ${line - header}): ${text.split("\n").slice(-1)[0]}`;
  });
}
