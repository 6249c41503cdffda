// The browser's side of live values: the latest reading of each channel and a short history for
// its trend, kept in the tab (the gateway keeps no history for the console). Batches arrive as
// fast as the device is polled; the page is repainted from here at most every `FLUSH_MS`, only
// for the channels that changed, inside an animation frame (nothing is drawn for a hidden tab).

/** Shortest time between two repaints of the same channel. */
export const FLUSH_MS = 250;
/** How far back a trend goes. */
export const TREND_SPAN_MS = 5 * 60 * 1000;
/** Most points kept per channel (older ones are dropped first). */
const MAX_POINTS = 600;

/** Latest readings and trends of one device's channels, flushed to `paint(dirtyChannels)`. */
export class ChannelStore {
  constructor(paint) {
    this.paint = paint;
    this.latest = new Map();   // channel -> reading {channel, value, ts, quality, reason, unit}
    this.history = new Map();  // channel -> [[ts, number], ...]
    this.dirty = new Set();
    this.timer = 0;
    this.last = 0;
  }

  /** Takes the readings of one batch (or of a `device.read` answer). */
  add(readings) {
    for (const r of readings) {
      const prev = this.latest.get(r.channel);
      if (prev && prev.ts > r.ts) continue;
      this.latest.set(r.channel, r);
      const num = typeof r.value === 'boolean' ? (r.value ? 1 : 0) : r.value;
      if (typeof num === 'number' && isFinite(num) && r.quality === 'good') {
        let hist = this.history.get(r.channel);
        if (!hist) this.history.set(r.channel, (hist = []));
        if (!hist.length || hist[hist.length - 1][0] < r.ts) hist.push([r.ts, num]);
        const cut = Date.now() - TREND_SPAN_MS;
        let drop = 0;
        while (drop < hist.length && (hist[drop][0] < cut || hist.length - drop > MAX_POINTS)) drop++;
        if (drop) hist.splice(0, drop);
      }
      this.dirty.add(r.channel);
    }
    this.schedule();
  }

  schedule() {
    if (this.timer || !this.dirty.size) return;
    const wait = Math.max(0, this.last + FLUSH_MS - Date.now());
    this.timer = setTimeout(() => requestAnimationFrame(() => this.flush()), wait);
  }

  flush() {
    this.timer = 0;
    this.last = Date.now();
    const dirty = this.dirty;
    this.dirty = new Set();
    this.paint(dirty);
  }

  /** Stops pending repaints. */
  stop() {
    clearTimeout(this.timer);
    this.timer = 0;
    this.paint = () => {};
  }
}
