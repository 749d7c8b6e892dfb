/**
 * Dealing tasks to waiting workers: the rule a claim (TaskStore.claimBatch, over the queue) and a
 * submission handed straight to waiting workers (TaskStore.submitTasks, over its own tasks)
 * share. Workers are grouped by label set; within a group, each task goes to the next worker,
 * round-robin, that has the free slots for it and room for one more task.
 */

/** A worker that may be dealt tasks: its labels, free slots, and how many tasks it may take. */
export interface Taker {
  labels: ReadonlySet<string>;
  free: number;
  room: number;
}

/** The takers of one label set, dealt round-robin. */
export class LabelGroup {
  /** The takers' indexes in the caller's list, in its order. */
  readonly members: number[] = [];
  private readonly free: number[] = [];
  private readonly room: number[] = [];
  private next = 0;
  /** Members with room for another task. */
  open = 0;
  /**
   * The fewest slots no member had room for. Free slots only shrink while dealing, so a task
   * that big or bigger is refused without a scan of the members: without it, every row of a
   * wide class that no member could take cost a scan of them all.
   */
  private noRoomFrom = Number.POSITIVE_INFINITY;

  constructor(readonly labels: ReadonlySet<string>) {}

  add(index: number, taker: Taker): void {
    this.members.push(index);
    this.free.push(taker.free);
    this.room.push(taker.room);
    if (taker.free > 0 && taker.room > 0) this.open++;
  }

  /** Tasks the group could take at most: each member's free slots, capped by its room. */
  get wanted(): number {
    return this.free.reduce((n, f, m) => n + Math.min(f, this.room[m]!), 0);
  }

  get maxFree(): number {
    return Math.max(...this.free);
  }

  /** The next member (round-robin) with room for a task of `slots`, charged for it; or -1. */
  take(slots: number): number {
    if (this.open === 0 || slots >= this.noRoomFrom) return -1;
    const n = this.members.length;
    for (let step = 0; step < n; step++) {
      const m = (this.next + step) % n;
      if (this.free[m]! < slots || this.room[m]! < 1) continue;
      this.free[m]! -= slots;
      this.room[m]! -= 1;
      if (this.free[m] === 0 || this.room[m] === 0) this.open--;
      this.next = (m + 1) % n;
      return this.members[m]!;
    }
    this.noRoomFrom = slots;
    return -1;
  }
}

/** Groups the takers (null: not taking) by label set, in order of first appearance. */
export function groupByLabels(takers: ReadonlyArray<Taker | null>): LabelGroup[] {
  const groups = new Map<string, LabelGroup>();
  takers.forEach((t, i) => {
    if (t === null || t.free < 1 || t.room < 1) return;
    const key = JSON.stringify([...t.labels].sort());
    let group = groups.get(key);
    if (!group) groups.set(key, (group = new LabelGroup(t.labels)));
    group.add(i, t);
  });
  return [...groups.values()];
}
