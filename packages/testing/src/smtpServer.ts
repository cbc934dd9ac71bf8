import { SMTPServer } from "smtp-server";
import { freePort } from "./freePort";

/**
 * A real SMTP server (the smtp-server package) on loopback for one test file, capturing every
 * message it accepts. `reject` makes RCPT TO answer a code for matching recipients (550 =
 * permanent, 451 = try later); stop() and start() take it down and bring it back on the same
 * port ("SMTP down, then up").
 */
export interface CapturedMail {
  from: string;
  to: string[];
  raw: string;
  /** Header value by lower-case name (first occurrence, unfolded). */
  header(name: string): string | undefined;
}

export interface SmtpTestServer {
  host: "127.0.0.1";
  port: number;
  messages: CapturedMail[];
  /** `times`: reject only the next N matching recipients, then accept again (default: always). */
  reject: Array<{ recipient: RegExp; code: number; times?: number }>;
  /** Delay before the server answers DATA (a slow but live server). */
  dataDelayMs: number;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function startSmtpServer(): Promise<SmtpTestServer> {
  const port = await freePort();
  let server: SMTPServer | undefined;
  const smtp: SmtpTestServer = {
    host: "127.0.0.1",
    port,
    messages: [],
    reject: [],
    dataDelayMs: 0,
    async start() {
      server = new SMTPServer({
        authOptional: true,
        disabledCommands: ["STARTTLS", "AUTH"],
        logger: false,
        onRcptTo(address, _session, callback) {
          const rule = smtp.reject.find((r) => r.recipient.test(address.address) && (r.times === undefined || r.times > 0));
          if (!rule) return callback();
          if (rule.times !== undefined) rule.times--;
          const err = Object.assign(new Error(rule.code >= 500 ? "mailbox unavailable" : "try again later"), { responseCode: rule.code });
          return callback(err);
        },
        onData(stream, session, callback) {
          const chunks: Buffer[] = [];
          stream.on("data", (c: Buffer) => chunks.push(c));
          stream.on("end", () => {
            const raw = Buffer.concat(chunks).toString("utf8");
            const head = raw.split(/\r?\n\r?\n/)[0]!.replace(/\r?\n[ \t]+/g, " ");
            smtp.messages.push({
              from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
              to: session.envelope.rcptTo.map((r) => r.address),
              raw,
              header: (name) => new RegExp(`^${name}:[ \\t]*(.*)$`, "im").exec(head)?.[1]?.trim(),
            });
            setTimeout(() => callback(), smtp.dataDelayMs);
          });
        },
      });
      await new Promise<void>((resolve, reject) => {
        server!.once("error", reject);
        server!.listen(port, "127.0.0.1", () => resolve());
      });
    },
    async stop() {
      const s = server;
      server = undefined;
      if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    },
  };
  await smtp.start();
  return smtp;
}

