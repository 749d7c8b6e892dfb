/**
 * The classes of the queue, in memory: the claim's map of which parts of tasks_queue_class to
 * walk (TaskStore.claimBatch). A class is the tasks with the same required labels (as stored)
 * and the same slots; a worker can take every task of a class or none.
 *
 * Classes are filed under their first required label (null for none), so a claim looks only under
 * its workers' own labels: a queue of tasks each pinned to one host by a label of its own costs
 * a worker the classes of its host, not one check per host.
 */

export interface QueueClass {
  /** The task rows' `requires`: a JSON array of labels, or null for none. */
  readonly requires: string | null;
  readonly labels: readonly string[];
  readonly slots: number;
}

export class QueueClasses {
  private readonly byLabel = new Map<string | null, Map<string, QueueClass>>();
  /** Every class's key: the check each queued task makes (see add) costs one lookup. */
  private readonly keys = new Set<string>();

  /** requires is a JSON array or null, so keys cannot collide. */
  private static key(requires: string | null, slots: number): string {
    return `${slots}:${requires}`;
  }

  get size(): number {
    return this.keys.size;
  }

  /** Called for every task that enters the queue (a million for a big upload): usually a no-op. */
  add(requires: string | null, slots: number): void {
    const key = QueueClasses.key(requires, slots);
    if (this.keys.has(key)) return;
    this.keys.add(key);
    const labels = requires === null ? [] : (JSON.parse(requires) as string[]);
    const first = labels[0] ?? null;
    let filed = this.byLabel.get(first);
    if (!filed) this.byLabel.set(first, (filed = new Map()));
    filed.set(key, { requires, labels, slots });
  }

  has(requires: string | null, slots: number): boolean {
    return this.keys.has(QueueClasses.key(requires, slots));
  }

  delete(c: QueueClass): void {
    const key = QueueClasses.key(c.requires, c.slots);
    if (!this.keys.delete(key)) return;
    const first = c.labels[0] ?? null;
    const filed = this.byLabel.get(first)!;
    filed.delete(key);
    if (filed.size === 0) this.byLabel.delete(first);
  }

  /** The classes a worker with these labels and this many free slots can take (a new array). */
  takeable(labels: ReadonlySet<string>, freeSlots: number): QueueClass[] {
    const out: QueueClass[] = [];
    for (const first of [null, ...labels]) {
      const filed = this.byLabel.get(first);
      if (!filed) continue;
      for (const c of filed.values()) if (c.slots <= freeSlots && c.labels.every((l) => labels.has(l))) out.push(c);
    }
    return out;
  }
}
