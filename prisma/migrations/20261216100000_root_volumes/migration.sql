-- The mounted volume each local storage root was first seen on, by any worker (or CLI command):
-- a worker started while that volume is away sees an empty folder at its mount point and could
-- not tell it from the root on its own (it wrote the destination's files onto the disk beneath,
-- or failed every source file as not-found). Here, not in Redis: the memory must outlive Redis
-- and every worker. Keyed by the root's absolute path as configured; the mount point is a path
-- too (a device number differs per host and container). A row goes only by `fleet volumes forget`.
CREATE TABLE "root_volumes" (
    "root" TEXT NOT NULL,
    "mount_point" TEXT NOT NULL,
    "seen_at" TIMESTAMPTZ(3) NOT NULL DEFAULT now(),
    "seen_by" TEXT NOT NULL,

    CONSTRAINT "root_volumes_pkey" PRIMARY KEY ("root")
);
