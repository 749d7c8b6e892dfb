/**
 * The classes of the queue, in memory: the claim's map of which parts of tasks_queue_class to
 * walk (TaskStore.claimBatch). A class is the tasks with the same required labels (as stored)
 * and the same slots; a worker can take every task of a class or none.
 *
 * Each class is filed under one of its required labels (null for none): a worker can take it only
 * if it has that label, so a claim looks only under its workers' own labels. The label chosen is
 * the one with the fewest classes filed under it when the class is added: tasks needing
 * ["linux", "host=7"] end up under "host=7" once "linux" holds one class, so a queue of tasks
 * pinned to 100,000 hosts costs a worker the classes of its own host, not a check per host.
 */

export interface QueueClass {
  /** The task rows' `requires`: a JSON array of labels, or null for none. */
  readonly requires: string | null;
  readonly labels: readonly string[];
  readonly slots: number;
  /** The label it is filed under (null: none required). */
  readonly filedUnder: string | null;
}

export class QueueClasses {
  private readonly byLabel = new Map<string | null, Map<string, QueueClass>>();
  /** Every class by key: the check each queued task makes (see add) costs one lookup. */
  private readonly all = new Map<string, QueueClass>();

  /** requires is a JSON array or null, so keys cannot collide. */
  private static key(requires: string | null, slots: number): string {
    return `${slots}:${requires}`;
  }

  get size(): number {
    return this.all.size;
  }

  /** Called for every task that enters the queue (a million for a big upload): usually a no-op. */
  add(requires: string | null, slots: number): void {
    const key = QueueClasses.key(requires, slots);
    if (this.all.has(key)) return;
    const labels = requires === null ? [] : (JSON.parse(requires) as string[]);
    let filedUnder: string | null = null;
    let fewest = Number.POSITIVE_INFINITY;
    for (const label of labels) {
      const n = this.byLabel.get(label)?.size ?? 0;
      if (n < fewest) [filedUnder, fewest] = [label, n];
    }
    let filed = this.byLabel.get(filedUnder);
    if (!filed) this.byLabel.set(filedUnder, (filed = new Map()));
    const c: QueueClass = { requires, labels, slots, filedUnder };
    filed.set(key, c);
    this.all.set(key, c);
  }

  has(requires: string | null, slots: number): boolean {
    return this.all.has(QueueClasses.key(requires, slots));
  }

  delete(requires: string | null, slots: number): void {
    const key = QueueClasses.key(requires, slots);
    const c = this.all.get(key);
    if (!c) return;
    this.all.delete(key);
    const filed = this.byLabel.get(c.filedUnder)!;
    filed.delete(key);
    if (filed.size === 0) this.byLabel.delete(c.filedUnder);
  }

  /** The classes a worker with these labels and this many free slots can take (a new array). */
  takeable(labels: ReadonlySet<string>, freeSlots: number): QueueClass[] {
    const out: QueueClass[] = [];
    for (const under of [null, ...labels]) {
      const filed = this.byLabel.get(under);
      if (!filed) continue;
      for (const c of filed.values()) if (c.slots <= freeSlots && c.labels.every((l) => labels.has(l))) out.push(c);
    }
    return out;
  }
}
