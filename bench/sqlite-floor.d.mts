import type Database from 'better-sqlite3';

export interface Floor {
  db: Database.Database;
  claim(leaseId: string, workerId: string, now: number, limit: number): Array<{ id: number; spec: string }>;
  complete(now: number, result: string, id: number, leaseId: string): boolean;
}

export function openFloor(path: string, tasks: number, sync?: 'normal' | 'full'): Floor;
