/**
 * A database migrated by a newer release is refused, not run against (migrations on open are
 * tested with the features they bring: queued-at.test.ts, attempts.test.ts, claim.test.ts).
 */
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../src/index.js';
import { openStore, reopen } from './helpers.js';

describe('schema version', () => {
  it('refuses a database a newer release has migrated, and leaves it as it was', () => {
    const { store, path } = openStore();
    store.db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    store.close();
    expect(() => reopen(path)).toThrow(`the database ${path} has schema version ${MIGRATIONS.length + 1}, newer than this release knows (${MIGRATIONS.length})`);
    const raw = new Database(path, { readonly: true });
    try {
      expect(raw.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length + 1);
    } finally {
      raw.close();
    }
  });
});

describe('the tasks table\'s indexes', () => {
  it('are the ones migration 7 leaves, on a fresh database and on one upgraded from version 6', () => {
    const expected = ['tasks_job', 'tasks_job_cancelled', 'tasks_job_failed', 'tasks_job_key', 'tasks_job_queued', 'tasks_job_running', 'tasks_job_succeeded', 'tasks_leases', 'tasks_queue_class', 'tasks_worker'];
    const indexes = (db: Database.Database) =>
      (db.prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks' AND name NOT LIKE 'sqlite_%' ORDER BY name`).all() as Array<{ name: string }>).map((r) => r.name);
    const { store, path } = openStore();
    expect(indexes(store.db)).toEqual(expected);
    // As version 6 left it: the one job index keyed by state.
    store.createJob({ tasks: [{ shell: 'true' }] });
    store.db.exec(`DROP INDEX tasks_job; DROP INDEX tasks_job_queued; DROP INDEX tasks_job_running; DROP INDEX tasks_job_succeeded;
                   DROP INDEX tasks_job_failed; DROP INDEX tasks_job_cancelled; CREATE INDEX tasks_job_state ON tasks (job_id, state, id);
                   PRAGMA user_version = 6;`);
    store.close();
    const upgraded = reopen(path);
    try {
      expect(indexes(upgraded.db)).toEqual(expected);
      expect(upgraded.listTasks(1, { state: 'queued', limit: 10 }).items.map((t) => t.id)).toEqual(['task-1']);
      expect(upgraded.db.pragma('integrity_check', { simple: true })).toBe('ok');
    } finally {
      upgraded.close();
    }
  });
});
