/**
 * Keys in the order they became evictable, oldest first, for a store at its bound: every new
 * record evicts the oldest. A Set iterated from its start would do it in insertion order, but V8
 * keeps a deleted Set entry as a hole until the table is rebuilt, and every iteration walks the
 * holes at the front again: at 100,000 records each eviction walked tens of thousands of them and
 * a first attempt cost 25 times what it did below the bound.
 *
 * Here a key's place is a sequence number: deleting or moving a key only forgets its number, its
 * old slot is skipped when met, and the array is rebuilt without such slots once they are half of
 * it. A slot is met a bounded number of times, so an eviction costs O(1) amortized.
 */
export class EvictionQueue {
  // Two parallel arrays rather than an object per slot: a slot lives as long as its record, and
  // every object a record keeps is one more for the garbage collector to copy and promote.
  private keys: string[] = [];
  private seqs: number[] = [];
  private head = 0;
  private next = 0;
  private readonly live = new Map<string, number>();
  /** Slots visited by `first`, `oldest` and compaction so far: what an eviction costs, for tests. */
  scanned = 0;

  get size(): number {
    return this.live.size;
  }

  /** The key becomes the newest (added, or moved to the back if it was in the queue). */
  push(key: string): void {
    const seq = this.next++;
    this.live.set(key, seq);
    this.keys.push(key);
    this.seqs.push(seq);
    this.compactIfSparse();
  }

  delete(key: string): void {
    if (this.live.delete(key)) this.compactIfSparse();
  }

  /** The oldest live key, or undefined when there is none. */
  first(): string | undefined {
    const { keys, seqs, live } = this;
    while (this.head < keys.length) {
      this.scanned++;
      const key = keys[this.head] as string;
      if (live.get(key) === seqs[this.head]) return key;
      // A skipped slot at the front is gone for good.
      this.head++;
    }
    return undefined;
  }

  /** Live keys from the oldest on; the caller may delete the key it is given before asking for the next. */
  *oldest(): Generator<string> {
    for (let i = this.head; i < this.keys.length; i++) {
      this.scanned++;
      const key = this.keys[i] as string;
      if (this.live.get(key) !== this.seqs[i]) {
        if (i === this.head) this.head++;
        continue;
      }
      yield key;
    }
  }

  /** Rebuilds the arrays once half of their slots (the skipped front included) hold no live key. */
  private compactIfSparse(): void {
    const total = this.keys.length;
    if (total < 1024 || (total - this.live.size) * 2 < total) return;
    const keys: string[] = [];
    const seqs: number[] = [];
    for (let i = this.head; i < total; i++) {
      this.scanned++;
      const key = this.keys[i] as string;
      if (this.live.get(key) === this.seqs[i]) {
        keys.push(key);
        seqs.push(this.seqs[i] as number);
      }
    }
    this.keys = keys;
    this.seqs = seqs;
    this.head = 0;
  }
}
