import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";

/**
 * A small kustomize: renders the features deploy/k8s uses — resources (files and
 * directories), labels (metadata only), images, and replacements with delimiter options — so
 * the manifests can be rendered and validated on a machine without kubectl. Any other
 * kustomization field is an error, never silently ignored; k8s.test.ts compares the output
 * with `kubectl kustomize` wherever kubectl exists.
 */
export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; [key: string]: any };

interface Kustomization {
  apiVersion?: string;
  kind?: string;
  resources?: string[];
  labels?: Array<{ pairs: Record<string, string>; includeSelectors?: boolean; includeTemplates?: boolean }>;
  images?: Array<{ name: string; newName?: string; newTag?: string }>;
  replacements?: Replacement[];
}

interface Options {
  delimiter?: string;
  index?: number;
}

interface Replacement {
  source: { kind: string; name: string; fieldPath: string; options?: Options };
  targets: Array<{ select: { kind: string; name?: string }; fieldPaths: string[]; options?: Options }>;
}

const SUPPORTED = new Set(["apiVersion", "kind", "resources", "labels", "images", "replacements"]);

export function renderKustomization(dir: string): K8sObject[] {
  const k = loadYaml(join(dir, "kustomization.yaml"))[0] as Kustomization;
  const unsupported = Object.keys(k).filter((key) => !SUPPORTED.has(key));
  if (unsupported.length > 0) throw new Error(`${dir}/kustomization.yaml: ${unsupported.join(", ")} not supported by this renderer`);
  const objects: K8sObject[] = [];
  for (const resource of k.resources ?? []) {
    const path = join(dir, resource);
    if (!existsSync(path)) throw new Error(`${dir}/kustomization.yaml: resource ${resource} does not exist`);
    objects.push(...(statSync(path).isDirectory() ? renderKustomization(path) : (loadYaml(path) as K8sObject[])));
  }
  for (const label of k.labels ?? []) {
    if (label.includeSelectors || label.includeTemplates) throw new Error("labels with includeSelectors/includeTemplates are not supported");
    for (const o of objects) o.metadata.labels = { ...o.metadata.labels, ...label.pairs };
  }
  for (const image of k.images ?? []) for (const o of objects) renameImages(o, image);
  for (const r of k.replacements ?? []) replace(objects, r);
  return objects;
}

function loadYaml(path: string): unknown[] {
  return parseAllDocuments(readFileSync(path, "utf8")).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${path}: ${doc.errors[0]!.message}`);
    return doc.toJS() as unknown;
  });
}

function podSpecs(o: K8sObject): any[] {
  if (o.kind === "Job" || o.kind === "Deployment" || o.kind === "StatefulSet" || o.kind === "DaemonSet") return [o.spec.template.spec];
  if (o.kind === "Pod") return [o.spec];
  return [];
}

function renameImages(o: K8sObject, image: NonNullable<Kustomization["images"]>[number]): void {
  for (const spec of podSpecs(o)) {
    for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? [])]) {
      const [name, tag] = splitImage(c.image as string);
      if (name !== image.name) continue;
      const newTag = image.newTag ?? tag;
      c.image = `${image.newName ?? name}${newTag ? `:${newTag}` : ""}`;
    }
  }
}

function splitImage(image: string): [string, string | undefined] {
  const slash = image.lastIndexOf("/");
  const colon = image.lastIndexOf(":");
  return colon > slash ? [image.slice(0, colon), image.slice(colon + 1)] : [image, undefined];
}

/** `a.b.[name=x].c` → the value there (arrays selected by a field's value). */
function walk(root: any, fieldPath: string, set?: (parent: any, key: string) => void): any {
  const parts = fieldPath.split(".");
  let node = root;
  for (const [i, part] of parts.entries()) {
    const select = /^\[(\w+)=(.+)\]$/.exec(part);
    let key: string | number = part;
    if (select) {
      key = (node as any[]).findIndex((item) => String(item[select[1]!]) === select[2]);
      if (key < 0) throw new Error(`${fieldPath}: no item with ${select[1]}=${select[2]}`);
    }
    if (i === parts.length - 1) {
      if (set) set(node, String(key));
      return node[key];
    }
    node = node[key];
    if (node === undefined) throw new Error(`${fieldPath}: ${part} missing`);
  }
}

function replace(objects: K8sObject[], r: Replacement): void {
  const source = objects.find((o) => o.kind === r.source.kind && o.metadata.name === r.source.name);
  if (!source) throw new Error(`replacement source ${r.source.kind}/${r.source.name} not found`);
  let value = String(walk(source, r.source.fieldPath));
  if (r.source.options?.delimiter !== undefined) {
    const part = value.split(r.source.options.delimiter)[r.source.options.index ?? 0];
    if (part === undefined) throw new Error(`replacement source ${r.source.fieldPath}: no part ${r.source.options.index} in ${value}`);
    value = part;
  }
  for (const target of r.targets) {
    const selected = objects.filter((o) => o.kind === target.select.kind && (target.select.name === undefined || o.metadata.name === target.select.name));
    for (const o of selected) {
      for (const fieldPath of target.fieldPaths) {
        walk(o, fieldPath, (parent, key) => {
          if (target.options?.delimiter === undefined) {
            parent[key] = value;
            return;
          }
          const parts = String(parent[key]).split(target.options.delimiter);
          parts[target.options.index ?? 0] = value;
          parent[key] = parts.join(target.options.delimiter);
        });
      }
    }
  }
}
