//! What one gateway knows of one policy and client in the store, and the sliding-window
//! decision made from it.

use super::super::Verdict;

/// What this gateway knows of one policy and client.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Entry {
    /// The window these counts are for, as an index of the clock.
    pub window: u64,
    /// The store's total for `window` when last pulled (what this gateway pushed included).
    pub total: u64,
    /// Counted here for `window` and not pushed yet.
    pub pending: u64,
    /// The total of the window before (the store's, or this gateway's best guess).
    pub prev: u64,
    /// Counted here for the window before and not pushed yet.
    pub prev_pending: u64,
    /// When `total` was pulled (Unix ms; 0: never).
    pub pulled_at: u64,
    /// How fast the other gateways' counts of this key grew between the last two pulls,
    /// per ms: between syncs their requests are assumed to go on at that pace.
    pub others_per_ms: f32,
    /// This gateway's own pace over the same time.
    pub own_per_ms: f32,
    /// A request asked about this key since its totals were last pulled.
    pub asked: bool,
    /// The store holds `window`'s key (made with its expiry): a push only adds to it.
    pub stored: bool,
    /// The same for the window before.
    pub prev_stored: bool,
    /// The window before was pulled late enough that no gateway adds to it any more.
    pub prev_settled: bool,
}

impl Entry {
    /// Move to window `now`, if it is a later one.
    pub fn roll(&mut self, now: u64) {
        if self.window == now {
            return;
        }
        if self.window + 1 == now {
            *self = Entry {
                window: now,
                total: 0,
                pending: 0,
                prev: self.total + self.pending,
                prev_pending: self.pending,
                pulled_at: 0,
                others_per_ms: self.others_per_ms,
                own_per_ms: self.own_per_ms,
                asked: self.asked,
                stored: false,
                prev_stored: self.stored,
                prev_settled: false,
            };
        } else if self.window < now {
            *self = Entry {
                window: now,
                asked: self.asked,
                ..Entry::default()
            };
        }
    }

    /// Whether anything of this key is left in this window or the one before.
    pub fn is_live(&self) -> bool {
        self.total + self.pending + self.prev + self.prev_pending > 0
    }
}

/// The sliding-window decision for a count `count` in the current window and `prev` in
/// the one before, at `now_ms`: room for one more request, and when there is room again.
pub(super) fn decide(
    requests: u32,
    window_secs: u64,
    now_ms: u64,
    prev: u64,
    count: u64,
) -> Verdict {
    let w_ms = window_secs * 1000;
    let into = now_ms % w_ms;
    let frac = into as f64 / w_ms as f64;
    let estimate = prev as f64 * (1.0 - frac) + count as f64;
    let q = f64::from(requests);
    let to_end = (w_ms - into) as f64 / 1000.0;
    if estimate + 1.0 <= q {
        return Verdict::Allowed {
            remaining: (q - estimate - 1.0).floor().max(0.0) as u32,
            reset: to_end.ceil().max(1.0) as u32,
        };
    }
    // when the weighted total leaves room for one: later in this window if the current
    // count alone does, else in the next window once enough of this one has slid out
    let w = window_secs as f64;
    let wait = if (count as f64) + 1.0 <= q && prev > 0 {
        let needed = 1.0 - (q - 1.0 - count as f64) / prev as f64;
        (needed - frac).max(0.0) * w
    } else {
        let needed = if count > 0 {
            (1.0 - (q - 1.0) / count as f64).max(0.0)
        } else {
            0.0
        };
        to_end + needed * w
    };
    Verdict::Limited {
        reset: wait.ceil().max(1.0) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_window_weighs_by_how_much_of_it_still_overlaps() {
        // 10 per 10 s; 8 in the previous window, 1 s into this one: 8·0.9 + 0 = 7.2
        let v = decide(10, 10, 1_000, 8, 0);
        assert_eq!(
            v,
            Verdict::Allowed {
                remaining: 1,
                reset: 9
            }
        );
        // 9 s in: 8·0.1 + 8 = 8.8, and one more makes 9.8
        assert!(matches!(
            decide(10, 10, 9_000, 8, 8),
            Verdict::Allowed { .. }
        ));
        // at the boundary a client that used its budget gets none at once
        let v = decide(10, 10, 0, 10, 0);
        assert!(matches!(v, Verdict::Limited { reset: 1 }), "{v:?}");
    }

    #[test]
    fn limited_says_when_there_is_room_again() {
        // 10 in the current window (full), 2 s left: the next window needs 10% of it gone
        let v = decide(10, 10, 8_000, 0, 10);
        assert_eq!(v, Verdict::Limited { reset: 3 });
        // the current count leaves room, the previous window's weight does not yet:
        // 5 now, 10 before, 0.5 in: 5 + 10·0.5 = 10; room once 10·(1-f) <= 4, at f = 0.6
        let v = decide(10, 10, 5_000, 10, 5);
        assert_eq!(v, Verdict::Limited { reset: 1 });
    }

    #[test]
    fn an_entry_rolls_its_counts_into_the_previous_window() {
        let mut e = Entry {
            window: 5,
            total: 7,
            pending: 2,
            prev: 1,
            stored: true,
            asked: true,
            ..Entry::default()
        };
        e.roll(6);
        assert_eq!(
            (e.window, e.total, e.pending, e.prev, e.prev_pending),
            (6, 0, 0, 9, 2)
        );
        assert!(e.prev_stored && !e.stored && !e.prev_settled && e.asked);
        e.roll(9);
        assert_eq!(
            (e.window, e.prev),
            (9, 0),
            "two windows on, nothing is left"
        );
        assert!(!e.is_live());
    }
}
