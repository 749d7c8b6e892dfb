/**
 * A statement over a batch of rows passed as bound parameters, `FROM (VALUES (?, ?, ?), …)`,
 * instead of one JSON array through json_each.
 *
 * Why: encoding a batch as JSON in JS and parsing it again in SQLite cost ~0.9 µs of a
 * completion's ~5.7 µs (measured with 128 completions per statement), and the dispatch path
 * runs three such statements per task (docs/benchmarks.md). SQLite prepares a statement for a
 * fixed number of rows, so row counts are rounded up to a power of two and padded with rows of
 * NULLs, which the statement must ignore (they match no `id`, or are filtered out), and batches
 * are cut at MAX_ROWS: at most 9 prepared statements per shape.
 */
import type Database from 'better-sqlite3';

/** Most rows bound to one statement (times the row width, well under SQLite's 32,766 parameters). */
const MAX_ROWS = 256;

export class BatchStatement {
  private readonly byRows = new Map<number, Database.Statement>();

  /**
   * `sql` receives the VALUES list (`(?, ?), (?, ?)`) to put where the rows go; its named
   * parameters (`@now`) are bound from the object passed to all() and run().
   */
  constructor(
    private readonly db: Database.Database,
    private readonly width: number,
    private readonly sql: (values: string) => string,
    private readonly rawRows: boolean,
  ) {}

  /** Runs the statement over `rows` and returns every row it returned, batch after batch. */
  all(named: Record<string, unknown>, rows: ReadonlyArray<readonly unknown[]>): unknown[] {
    const out: unknown[] = [];
    this.each(rows, (stmt, params) => {
      for (const r of stmt.all(named, ...params)) out.push(r);
    });
    return out;
  }

  /** Runs the statement over `rows`; returns how many rows it changed. */
  run(named: Record<string, unknown>, rows: ReadonlyArray<readonly unknown[]>): number {
    let changes = 0;
    this.each(rows, (stmt, params) => (changes += stmt.run(named, ...params).changes));
    return changes;
  }

  private each(rows: ReadonlyArray<readonly unknown[]>, exec: (stmt: Database.Statement, params: unknown[]) => void): void {
    for (let start = 0; start < rows.length; start += MAX_ROWS) {
      const chunk = rows.slice(start, start + MAX_ROWS);
      let size = 1;
      while (size < chunk.length) size *= 2;
      const params: unknown[] = [];
      for (const row of chunk) for (let i = 0; i < this.width; i++) params.push(row[i]);
      for (let i = chunk.length * this.width; i < size * this.width; i++) params.push(null);
      exec(this.statement(size), params);
    }
  }

  private statement(rows: number): Database.Statement {
    let stmt = this.byRows.get(rows);
    if (!stmt) {
      const row = `(${Array.from({ length: this.width }, () => '?').join(', ')})`;
      stmt = this.db.prepare(this.sql(Array.from({ length: rows }, () => row).join(', ')));
      if (this.rawRows) stmt.raw(true);
      this.byRows.set(rows, stmt);
    }
    return stmt;
  }
}
