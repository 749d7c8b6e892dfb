import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { MIGRATIONS } from './migrations.js';

export type SyncMode = 'normal' | 'full';

export interface OpenDbOptions {
  /** Path of the database file; its directory is created if missing. */
  path: string;
  /**
   * `normal` survives a crash of any process (WAL + synchronous=NORMAL);
   * `full` also survives power loss, at the cost of an fsync per commit.
   */
  sync?: SyncMode;
  /**
   * SQLite's `max_page_count`: the database may not grow past this many pages (4 KiB each).
   * Unset: SQLite's default (effectively unlimited). Used to provoke SQLITE_FULL in tests.
   */
  maxPages?: number | undefined;
}

/** Opens the database, applies pragmas and runs pending migrations. */
export function openDatabase(options: OpenDbOptions): Database.Database {
  if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
  const db = new Database(options.path);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${options.sync === 'full' ? 'FULL' : 'NORMAL'}`);
  // Measured here: a claim query that needs temporary b-trees spends most of its time on their
  // page faults with the default temp_store; MEMORY makes such claims ~3x faster (TOOLCHAIN.md).
  // The claim reads tasks_queue_class without one now; other statements still may.
  db.pragma('temp_store = MEMORY');
  db.pragma('busy_timeout = 5000');
  db.pragma('cache_size = -65536'); // 64 MiB page cache
  migrate(db, options.path);
  if (options.maxPages !== undefined) db.pragma(`max_page_count = ${Math.floor(options.maxPages)}`);
  return db;
}

function migrate(db: Database.Database, path: string): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  const newest = MIGRATIONS.at(-1)!.version;
  // Why refuse: an older release runs its statements against a schema it does not know. Since
  // migration 4 that is a silent cliff (its claim finds no index in queue order and sorts the
  // whole queue for every claim), and later migrations may be worse.
  if (current > newest) {
    db.close();
    throw new Error(`the database ${path} has schema version ${current}, newer than this release knows (${newest}): it was upgraded by a newer Pullman. Run that release, or restore a backup made before the upgrade`);
  }
  for (const m of MIGRATIONS) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    })();
  }
}

export function schemaVersion(db: Database.Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}
