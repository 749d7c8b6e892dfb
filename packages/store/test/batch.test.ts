import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { BatchStatement } from '../src/batch.js';

function table(n: number): Database.Database {
  const db = new Database(':memory:');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
  const insert = db.prepare('INSERT INTO t (id, v) VALUES (?, NULL)');
  for (let i = 1; i <= n; i++) insert.run(i);
  return db;
}

describe('BatchStatement', () => {
  // Row counts around the power-of-two padding and the 256-row cut.
  it.each([0, 1, 3, 4, 5, 255, 256, 257, 600])('updates and returns each of %i rows exactly once', (n) => {
    const db = table(700);
    const update = new BatchStatement(db, 2, (values) => `
      UPDATE t SET v = @prefix || r.column2 FROM (VALUES ${values}) AS r WHERE t.id = r.column1 RETURNING t.id, t.v`, true);
    const rows = Array.from({ length: n }, (_, i) => [i + 1, `v${i + 1}`]);
    const returned = update.all({ prefix: 'x-' }, rows) as Array<[number, string]>;
    expect(returned.map(([id]) => id).sort((a, b) => a - b)).toEqual(rows.map(([id]) => id));
    expect(returned.every(([id, v]) => v === `x-v${id}`)).toBe(true);
    // The padding rows (NULLs) touched nothing else.
    expect((db.prepare('SELECT count(*) AS c FROM t WHERE v IS NOT NULL').get() as { c: number }).c).toBe(n);
  });

  it('run() inserts only the real rows when the statement filters out the padding, and counts them', () => {
    const db = table(0);
    const insert = new BatchStatement(db, 2, (values) => `INSERT INTO t (id, v) SELECT column1, column2 FROM (VALUES ${values}) WHERE column1 IS NOT NULL`, false);
    expect(insert.run({}, Array.from({ length: 300 }, (_, i) => [i + 1, 'a']))).toBe(300);
    expect((db.prepare('SELECT count(*) AS c, max(id) AS m FROM t').get() as { c: number; m: number })).toEqual({ c: 300, m: 300 });
  });
});
