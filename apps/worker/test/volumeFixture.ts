import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LinkBreakers, breakerViews } from "@fleet/core/linkBreakers";
import type { BreakerView } from "@fleet/core/linkBreakers";
import type { WorkerFixture } from "./workerFixture";

/** Mounting takes root: elsewhere the volume tests are skipped. */
export const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

/** The fleet's open link breaker, if one is open. */
export async function openBreaker(fx: WorkerFixture): Promise<BreakerView | undefined> {
  return (await breakerViews(new LinkBreakers(fx.runtime.redis, fx.runtime.prefix))).find((b) => b.open);
}

/**
 * A volume that comes and goes as a network mount does: a tmpfs of its own (which keeps its
 * files while it is away) bind-mounted at `mountPoint`. `unmount()` leaves the empty mount point
 * behind, `mount()` brings the volume back with its files.
 */
export class TestVolume {
  private mounted = false;

  private constructor(
    readonly mountPoint: string,
    /** Where the volume's files are, mounted or not. */
    readonly volume: string,
  ) {}

  static async create(prefix: string, options: { mounted: boolean }): Promise<TestVolume> {
    const mountPoint = await mkdtemp(join(tmpdir(), `${prefix}-mount-point-`));
    const volume = await mkdtemp(join(tmpdir(), `${prefix}-volume-`));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=32m", "tmpfs", volume]);
    const created = new TestVolume(mountPoint, volume);
    if (options.mounted) created.mount();
    return created;
  }

  mount(): void {
    execFileSync("mount", ["--bind", this.volume, this.mountPoint]);
    this.mounted = true;
  }

  unmount(): void {
    execFileSync("umount", ["-l", this.mountPoint]);
    this.mounted = false;
  }

  async destroy(): Promise<void> {
    if (this.mounted) this.unmount();
    execFileSync("umount", ["-l", this.volume]);
    await rm(this.mountPoint, { recursive: true, force: true });
    await rm(this.volume, { recursive: true, force: true });
  }
}
