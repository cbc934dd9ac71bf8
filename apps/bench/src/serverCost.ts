import { readFile, readdir } from "node:fs/promises";
import type { Queryable } from "@fleet/db/pool";
import type { Redis } from "ioredis";

/**
 * What the servers did during a measurement, read from the servers themselves: PostgreSQL's
 * WAL position, its per-database and per-table counters, pg_stat_statements (when loaded), the
 * CPU time of the cluster's processes (/proc), and Redis's command and CPU counters. Meant for
 * the bench's private servers (privateServers.ts), where nothing else runs: on a shared
 * server other sessions' work would be counted too.
 */
export interface ServerSnapshot {
  walLsn: string;
  xactCommit: number;
  tupInserted: number;
  tupUpdated: number;
  tupDeleted: number;
  /** utime + stime (+ reaped children) of the postmaster and its processes, seconds. */
  pgCpuSeconds: number | null;
  /** calls per Redis command. */
  redisCalls: Record<string, number>;
  redisCpuSeconds: number;
  statements: Map<string, { calls: number; rows: number; walBytes: number; execMs: number }> | null;
}

const CLOCK_TICKS = 100; // sysconf(_SC_CLK_TCK) on Linux

export async function serverSnapshot(db: Queryable, redis: Redis, postmasterPid: number | null): Promise<ServerSnapshot> {
  const { rows } = await db.query<{ lsn: string; commit: string; ins: string; upd: string; del: string }>(
    `SELECT pg_current_wal_insert_lsn()::text AS lsn, xact_commit AS commit, tup_inserted AS ins, tup_updated AS upd, tup_deleted AS del
       FROM pg_stat_database WHERE datname = current_database()`,
  );
  const r = rows[0]!;
  const info = await redis.info("commandstats");
  const redisCalls: Record<string, number> = {};
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) redisCalls[m[1]!] = Number(m[2]);
  const cpu = await redis.info("cpu");
  const num = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(cpu)?.[1] ?? 0);
  return {
    walLsn: r.lsn,
    xactCommit: Number(r.commit),
    tupInserted: Number(r.ins),
    tupUpdated: Number(r.upd),
    tupDeleted: Number(r.del),
    pgCpuSeconds: postmasterPid === null ? null : await clusterCpuSeconds(postmasterPid),
    redisCalls,
    redisCpuSeconds: num("used_cpu_sys") + num("used_cpu_user"),
    statements: await statementStats(db),
  };
}

/** pg_stat_statements of this database, by query text; null when the extension is not there. */
async function statementStats(db: Queryable): Promise<ServerSnapshot["statements"]> {
  try {
    const { rows } = await db.query<{ query: string; calls: string; rows: string; wal: string; ms: number }>(
      `SELECT query, calls, rows, wal_bytes::int8 AS wal, total_exec_time AS ms FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    );
    const out = new Map<string, { calls: number; rows: number; walBytes: number; execMs: number }>();
    for (const s of rows) {
      const prev = out.get(s.query);
      out.set(s.query, { calls: (prev?.calls ?? 0) + Number(s.calls), rows: (prev?.rows ?? 0) + Number(s.rows), walBytes: (prev?.walBytes ?? 0) + Number(s.wal), execMs: (prev?.execMs ?? 0) + s.ms });
    }
    return out;
  } catch {
    return null;
  }
}

/** The postmaster of the server `db` talks to, when it runs on this machine (else null). */
export async function postmasterPidOf(db: Queryable): Promise<number | null> {
  const { rows } = await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
  const stat = await procStat(rows[0]!.pid);
  return stat ? stat.ppid : null;
}

/** CPU seconds of a postmaster and every process under it, including children it has reaped. */
export async function clusterCpuSeconds(postmaster: number): Promise<number | null> {
  const own = await procStat(postmaster);
  if (!own) return null;
  let ticks = own.utime + own.stime + own.cutime + own.cstime;
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const s = await procStat(Number(entry));
    if (s && s.ppid === postmaster) ticks += s.utime + s.stime + s.cutime + s.cstime;
  }
  return ticks / CLOCK_TICKS;
}

async function procStat(pid: number): Promise<{ ppid: number; utime: number; stime: number; cutime: number; cstime: number } | null> {
  try {
    const text = await readFile(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces), see proc(5).
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(f[1]), utime: Number(f[11]), stime: Number(f[12]), cutime: Number(f[13]), cstime: Number(f[14]) };
  } catch {
    return null;
  }
}

export interface ServerCost {
  files: number;
  ranges: number;
  /** Transactions committed per file (each autocommit statement is one). */
  transactionsPerFile: number;
  /** pg_stat_statements calls per file (null: the extension is not loaded). */
  statementsPerFile: number | null;
  /** Per statement kind: calls and WAL bytes per file (the 8 costliest by WAL). */
  topStatements: Array<{ query: string; callsPerFile: number; walBytesPerFile: number; execUsPerFile: number }> | null;
  rowsInsertedPerFile: number;
  rowsUpdatedPerFile: number;
  rowsDeletedPerFile: number;
  walBytesPerFile: number;
  pgCpuUsPerFile: number | null;
  redisCommandsPerRange: number;
  redisCommandsPerFile: number;
  redisCpuUsPerFile: number;
  /** The commands a range costs, most frequent first. */
  redisTopCommands: Record<string, number>;
}

export async function costBetween(db: Queryable, before: ServerSnapshot, after: ServerSnapshot, files: number, ranges: number): Promise<ServerCost> {
  const { rows } = await db.query<{ wal: string }>("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::int8 AS wal", [after.walLsn, before.walLsn]);
  const per = (n: number) => Math.round((n / files) * 1000) / 1000;
  const calls: Record<string, number> = {};
  for (const [cmd, n] of Object.entries(after.redisCalls)) {
    const d = n - (before.redisCalls[cmd] ?? 0);
    if (d > 0) calls[cmd] = d;
  }
  const redisTotal = Object.values(calls).reduce((a, b) => a + b, 0);
  const redisTopCommands = Object.fromEntries(
    Object.entries(calls)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 12)
      .map(([c, n]) => [c, Math.round((n / Math.max(ranges, 1)) * 10) / 10]),
  );
  let statementsPerFile: number | null = null;
  let topStatements: ServerCost["topStatements"] = null;
  if (after.statements && before.statements) {
    const diffs: Array<{ query: string; calls: number; wal: number; ms: number }> = [];
    for (const [query, s] of after.statements) {
      const b = before.statements.get(query);
      const d = { query, calls: s.calls - (b?.calls ?? 0), wal: s.walBytes - (b?.walBytes ?? 0), ms: s.execMs - (b?.execMs ?? 0) };
      // The bench's own polling and snapshots are not the pipeline's.
      if (d.calls > 0 && !/pg_stat_|pg_current_wal_insert_lsn|pg_wal_lsn_diff|pg_backend_pid|FILTER \(WHERE status <> 'COMPLETE'\)/.test(query)) diffs.push(d);
    }
    statementsPerFile = per(diffs.reduce((a, d) => a + d.calls, 0));
    topStatements = diffs
      .sort((a, b) => b.wal - a.wal || b.calls - a.calls)
      .slice(0, 8)
      .map((d) => ({ query: d.query.replace(/\s+/g, " ").slice(0, 100), callsPerFile: per(d.calls), walBytesPerFile: per(d.wal), execUsPerFile: per(d.ms * 1000) }));
  }
  return {
    files,
    ranges,
    transactionsPerFile: per(after.xactCommit - before.xactCommit),
    statementsPerFile,
    topStatements,
    rowsInsertedPerFile: per(after.tupInserted - before.tupInserted),
    rowsUpdatedPerFile: per(after.tupUpdated - before.tupUpdated),
    rowsDeletedPerFile: per(after.tupDeleted - before.tupDeleted),
    walBytesPerFile: per(Number(rows[0]!.wal)),
    pgCpuUsPerFile: after.pgCpuSeconds === null || before.pgCpuSeconds === null ? null : per((after.pgCpuSeconds - before.pgCpuSeconds) * 1e6),
    redisCommandsPerRange: Math.round((redisTotal / Math.max(ranges, 1)) * 10) / 10,
    redisCommandsPerFile: per(redisTotal),
    redisCpuUsPerFile: per((after.redisCpuSeconds - before.redisCpuSeconds) * 1e6),
    redisTopCommands,
  };
}

/** Table and index bytes per row of the tables a migration grows. */
export async function tableSizes(db: Queryable): Promise<Record<string, { rows: number; tableBytesPerRow: number; indexBytesPerRow: number; indexes: number }>> {
  const out: Record<string, { rows: number; tableBytesPerRow: number; indexBytesPerRow: number; indexes: number }> = {};
  for (const table of ["source_files", "migration_files", "migration_ranges", "migration_file_attempts", "migration_log"]) {
    const { rows } = await db.query<{ n: string; t: string; i: string; k: number }>(
      `SELECT (SELECT count(*) FROM ${table}) AS n, pg_table_size('${table}') AS t, pg_indexes_size('${table}') AS i,
              (SELECT count(*)::int FROM pg_indexes WHERE tablename = '${table}') AS k`,
    );
    const n = Number(rows[0]!.n);
    out[table] = { rows: n, tableBytesPerRow: n ? Math.round(Number(rows[0]!.t) / n) : 0, indexBytesPerRow: n ? Math.round(Number(rows[0]!.i) / n) : 0, indexes: rows[0]!.k };
  }
  return out;
}
