/**
 * The fleet's memory of the mounted volumes local storage roots were seen on (kept in
 * PostgreSQL, which outlives Redis and every worker). A worker started while a volume is away
 * sees an empty folder at its mount point and, on its own, cannot tell it from the root: the
 * record tells it the root was on a volume, so it neither writes under the empty mount point nor
 * fails a source file as not-found. Keyed by the root's absolute path as configured and naming
 * the mount point by path, never by device number (st_dev differs per host and container).
 */
export interface VolumeRecords {
  /**
   * Notes that `root` lies on the volume mounted at `mountPoint`, unless a sighting is recorded
   * already (it stays, until forgotten — or replaced by this one when `mountPoint` lies under
   * the recorded one: the root is on the volume mounted further down); resolves to the record
   * that holds now.
   */
  note(root: string, mountPoint: string): Promise<VolumeRecord>;
  /** The volume `root` was seen on (see note), or undefined when none is recorded (never seen on one, or forgotten). */
  recall(root: string): Promise<VolumeRecord | undefined>;
}

export interface VolumeRecord {
  /** Where the volume was mounted: the root itself or a folder above it. */
  mountPoint: string;
  seenAt: Date;
  /** The process that saw it (host:pid:token for a worker). */
  seenBy: string;
}

/** A local storage's use of the records: whose memory, and the setting that turns it off (named in errors). */
export interface MountMemory {
  records: VolumeRecords;
  /** e.g. "DESTINATION_REQUIRE_MOUNT": `=false` never requires a mounted volume. */
  setting: string;
}
