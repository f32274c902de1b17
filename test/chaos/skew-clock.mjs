// Preloaded with --import into a process whose wall clock must be CHAOS_CLOCK_SKEW_MS off: Date.now()
// and new Date() are shifted; durations (performance.now, timers) are not, as with a wrong system clock.
const skew = Number(process.env.CHAOS_CLOCK_SKEW_MS ?? 0);
const RealDate = Date;
class SkewedDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(RealDate.now() + skew);
    else super(...args);
  }

  static now() {
    return RealDate.now() + skew;
  }
}
globalThis.Date = SkewedDate;
