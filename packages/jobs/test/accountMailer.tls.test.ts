import { Redis } from "ioredis";
import { SMTPServer } from "smtp-server";
import { freePort } from "@fleet/testing/freePort";
import { testRedisUrl } from "@fleet/testing/testRedis";
import { createAccountServices } from "../src/accounts/accountServices";
import { toAccountSettings } from "../src/accounts/accountSettings";

/**
 * SMTP_USER/SMTP_PASSWORD must never cross the network in clear text (security review): on a
 * port other than 465 nodemailer upgrades with STARTTLS only when the server offers it, so a
 * relay without STARTTLS, or anyone on the path stripping it from the EHLO answer, was sent
 * AUTH PLAIN with the password. A real SMTP server that offers AUTH but not STARTTLS.
 */
describe("account mailer with SMTP credentials", () => {
  let server: SMTPServer;
  let port: number;
  const logins: Array<{ user: string; password: string; secure: boolean }> = [];
  const redis = new Redis(testRedisUrl(), { lazyConnect: true });

  beforeAll(async () => {
    port = await freePort();
    server = new SMTPServer({
      secure: false,
      disabledCommands: ["STARTTLS"],
      authOptional: true,
      allowInsecureAuth: true,
      authMethods: ["PLAIN", "LOGIN"],
      logger: false,
      onAuth(auth, session, callback) {
        logins.push({ user: auth.username ?? "", password: auth.password ?? "", secure: session.secure });
        callback(null, { user: auth.username });
      },
      onData(stream, _session, callback) {
        stream.resume();
        stream.on("end", () => callback());
      },
    });
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", () => resolve()));
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    redis.disconnect();
  });

  const mailer = (env: Record<string, string>) => {
    const settings = toAccountSettings({ SMTP_HOST: "127.0.0.1", SMTP_PORT: port, SMTP_TIMEOUT: 5_000, ...env } as never, "UTC");
    return createAccountServices(settings, undefined, redis, "fleet-test-mailer").openMailer();
  };
  const send = (m: ReturnType<typeof mailer>) => m.sendMail({ from: "fleet@example.org", to: "user@example.org", subject: "hello", text: "hello" });

  it("refuses to authenticate over a connection STARTTLS did not encrypt: the password is never sent", async () => {
    const m = mailer({ SMTP_USER: "fleet", SMTP_PASSWORD: "smtp-s3cret-password" });
    try {
      await expect(send(m)).rejects.toThrow(/STARTTLS|TLS/i);
    } finally {
      m.close();
    }
    expect(logins).toEqual([]);
  });

  it("still sends without credentials over a plain connection (a relay that needs no login)", async () => {
    logins.length = 0;
    const m = mailer({});
    try {
      await expect(send(m)).resolves.toMatchObject({ accepted: ["user@example.org"] });
    } finally {
      m.close();
    }
    expect(logins).toEqual([]);
  });
});
