import type { Command } from "commander";
import { revokeUserSessions } from "@fleet/core/sessionRevocation";
import type { CliContext } from "../context";

type Run = (fn: (ctx: CliContext) => Promise<number | void>) => Promise<void>;

/**
 * `fleet dashboard sessions revoke USER`: ends every dashboard session of USER on every
 * replica at once (a lost laptop, a leaver, a suspected stolen cookie). The user can log in
 * again with a valid password; remove or change the user in DASHBOARD_USERS to stop that too.
 */
export function registerDashboardCommands(program: Command, run: Run): void {
  const sessions = program.command("dashboard").description("the dashboard's logins").command("sessions").description("dashboard sessions");
  sessions
    .command("revoke <user>")
    .description("end every dashboard session of USER on every replica (they must log in again)")
    .action((user: string) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const generation = await revokeUserSessions(runtime.redis, runtime.prefix, user);
        process.stdout.write(`ended every dashboard session of ${user} (session generation ${generation})\n`);
      }),
    );
}
