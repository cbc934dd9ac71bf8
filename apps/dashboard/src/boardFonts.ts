import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import type { FastifyInstance } from "fastify";

/**
 * bull-board's page asks Google Fonts for IBM Plex; a dashboard behind a login should not
 * tell a third party who opens it when, nor depend on it. The same fonts (latin subset, the
 * weights the board uses) are served from the @fontsource packages under /fonts/, and the
 * board's HTML is pointed there (see queueBoards.ts), so its CSP can say font-src 'self'.
 */
export const BOARD_FONTS_CSS = "/fonts/plex.css";
const GOOGLE_FONTS_LINK = /<link[^>]+fonts\.googleapis\.com[^>]*>/g;

const FACES = [
  { pkg: "@fontsource/ibm-plex-sans", family: "IBM Plex Sans", weight: 400 },
  { pkg: "@fontsource/ibm-plex-sans", family: "IBM Plex Sans", weight: 500 },
  { pkg: "@fontsource/ibm-plex-sans", family: "IBM Plex Sans", weight: 600 },
  { pkg: "@fontsource/ibm-plex-mono", family: "IBM Plex Mono", weight: 400 },
  { pkg: "@fontsource/ibm-plex-mono", family: "IBM Plex Mono", weight: 500 },
] as const;

const fileOf = (f: (typeof FACES)[number]) => `${f.pkg.split("/")[1]}-latin-${f.weight}-normal.woff2`;

export function boardFontRoutes(app: FastifyInstance): void {
  const require = createRequire(__filename);
  const files = new Map(FACES.map((f) => [fileOf(f), path.join(path.dirname(require.resolve(`${f.pkg}/package.json`)), "files", fileOf(f))]));
  const css = FACES.map((f) => `@font-face{font-family:'${f.family}';font-style:normal;font-display:swap;font-weight:${f.weight};src:url(/fonts/${fileOf(f)}) format('woff2')}`).join("\n");

  app.get(BOARD_FONTS_CSS, async (_req, reply) => reply.header("content-type", "text/css; charset=utf-8").header("cache-control", "public, max-age=86400").send(css));
  app.get("/fonts/:file", async (req, reply) => {
    // Only the five files above: the name is a key of a fixed map, never a path.
    const file = files.get((req.params as { file: string }).file);
    if (!file) return reply.code(404).send({ error: "not found" });
    return reply.header("content-type", "font/woff2").header("cache-control", "public, max-age=604800, immutable").send(await readFile(file));
  });
}

/** The board's HTML with the Google Fonts link replaced by the local stylesheet. */
export function withLocalFonts(html: string): string {
  return html.replace(GOOGLE_FONTS_LINK, `<link href="${BOARD_FONTS_CSS}" rel="stylesheet">`);
}
