import type { Logger } from "./logger";

/**
 * Stops a process in order. Components register by name as they start; on SIGTERM/SIGINT
 * they are closed in reverse order (workers before the connections they use), each given
 * the time left before the deadline. A second signal exits at once.
 */
export interface Closable {
  name: string;
  close(): Promise<void>;
}

export interface ShutdownOptions {
  log: Logger;
  /** Hard limit for the whole shutdown; past it the process exits 1. */
  deadlineMs: number;
  /** Injected for tests: how the process ends. */
  exit?: (code: number) => void;
}

export class Shutdown {
  private readonly components: Closable[] = [];
  private stopping: Promise<void> | undefined;
  private readonly controller = new AbortController();
  private readonly exit: (code: number) => void;

  constructor(private readonly options: ShutdownOptions) {
    this.exit = options.exit ?? ((code) => process.exit(code));
  }

  /** Aborted as soon as shutdown begins: long loops (pollers, schedulers) watch it. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  register(name: string, close: () => Promise<void>): void {
    this.components.push({ name, close });
  }

  /** Installs the SIGTERM/SIGINT handlers. */
  listen(): void {
    const onSignal = (signal: NodeJS.Signals) => {
      if (this.stopping) {
        this.options.log.warn({ signal }, "second signal: exiting now");
        this.exit(130);
        return;
      }
      this.options.log.info({ signal }, "shutting down");
      void this.stop().then(
        () => this.exit(0),
        () => this.exit(1),
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  }

  /** Closes every component in reverse order of registration; safe to call twice. */
  stop(): Promise<void> {
    this.stopping ??= this.run();
    return this.stopping;
  }

  private async run(): Promise<void> {
    this.controller.abort("shutdown");
    const deadline = setTimeout(() => {
      this.options.log.error({ deadlineMs: this.options.deadlineMs }, "shutdown deadline passed: exiting");
      this.exit(1);
    }, this.options.deadlineMs);
    deadline.unref();
    let failed = false;
    for (const component of [...this.components].reverse()) {
      try {
        await component.close();
        this.options.log.debug({ component: component.name }, "closed");
      } catch (err) {
        failed = true;
        this.options.log.error({ err, component: component.name }, "close failed");
      }
    }
    clearTimeout(deadline);
    this.options.log.info("shutdown complete");
    if (failed) throw new Error("some components failed to close");
  }
}
