import { hashPassword } from "./passwords";

/**
 * Prints the scrypt hash of a password for DASHBOARD_USERS. The password is read from stdin
 * (never from the command line, where ps and shell history would keep it):
 *   node apps/dashboard/dist/hashPassword.js            (asks, without echo)
 *   printf %s "$PASSWORD" | node apps/dashboard/dist/hashPassword.js
 */
async function main(): Promise<void> {
  const password = process.stdin.isTTY ? await promptHidden("password: ") : (await readAll()).replace(/\r?\n$/, "");
  if (password.length < 8) {
    process.stderr.write("hash-password: use at least 8 characters\n");
    process.exit(1);
  }
  process.stdout.write(`${await hashPassword(password)}\n`);
}

async function readAll(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function promptHidden(question: string): Promise<string> {
  return new Promise((resolve) => {
    process.stderr.write(question);
    const stdin = process.stdin;
    stdin.setRawMode(true);
    stdin.resume();
    let value = "";
    const onData = (data: Buffer) => {
      for (const ch of data.toString("utf8")) {
        if (ch === "\r" || ch === "\n" || ch === "\u0004") {
          stdin.setRawMode(false);
          stdin.pause();
          stdin.off("data", onData);
          process.stderr.write("\n");
          resolve(value);
          return;
        }
        if (ch === "\u0003") process.exit(130);
        value = ch === "\u007f" ? value.slice(0, -1) : value + ch;
      }
    };
    stdin.on("data", onData);
  });
}

void main();
