/* Per-message quota counters, pure (no clock, no locks, no I/O): a port of router/throttle.py.
 *
 * A quota of N messages per W seconds is an exact sliding window (a ring of the last N admit
 * times, grown as slots are first used) up to WQ_EXACT_LIMIT, a token bucket of the same burst
 * and rate above. Counters live in a table keyed by the enforcer's quota key, shared by every
 * connection of the router and reference-counted like throttle.CounterTable: a counter is kept
 * after its last connection ends until it is idle, so reconnecting does not reset a quota.
 * The caller serialises access (the relay core holds one mutex around table calls).
 */
#ifndef WSGATE_QUOTA_H
#define WSGATE_QUOTA_H

#include <stddef.h>
#include <stdint.h>

#define WQ_EXACT_LIMIT 100000
#define WQ_SWEEP_INTERVAL 60.0
#define WQ_SLOTS 3 /* leased: the lease in use, the next sub-window's lease, credit */
#define WQ_CREDIT_MAX 64 /* leased: the core's own credit at most (router/lease.py MAX_CREDIT) */

/* Permits of a leased counter: usable while from <= now < until (router/lease.py decides). */
typedef struct wq_slot {
    int64_t n;
    double from, until;
} wq_slot;

typedef struct wq_counter {
    uint32_t refs; /* the table's entry + every connection holding it */
    int bucket;    /* token bucket (limit above WQ_EXACT_LIMIT) */
    int64_t limit;
    double window;
    double last; /* time of the last admitted message */
    /* sliding window */
    double *ring;
    uint32_t len, cap, head;
    /* token bucket */
    double tokens, stamp, rate;
    /* leased (the Redis-leased global mode): permits Python moved in, consumed one per
     * admitted message; `want` is set when the usable ones fall to `low` or a message found
     * none, `reported` once the core told Python (cleared by the next wq_lease_put). */
    int leased, want, reported;
    int64_t low;
    uint64_t used, refused;
    wq_slot slot[WQ_SLOTS];
    /* leased: admissions on credit the core may still make when no slot has a usable permit
     * (router/lease.py's credit rule, decided ahead by Python: a message must not wait for a
     * refill a loop turn away), and the times of those made that Python has not collected
     * (wq_lease_credit) to charge them as its own credit. */
    int64_t allow;
    uint32_t ncredit;
    double credit_at[WQ_CREDIT_MAX];
    /* leased: a message that finds neither a permit nor credit is held (the relay stops
     * reading that side, wq_decide), not refused, until Python tops the pool up, unless Python
     * said the window is really exhausted: then it is refused while now < dry_until
     * (wq_lease_dry). `gen` changes with every put, credit or dry change (held messages are
     * tried again), `waits` counts the holds. */
    double dry_until;
    uint64_t gen, waits;
} wq_counter;

typedef struct wq_entry {
    struct wq_entry *next;
    wq_counter *counter;
    uint32_t refs; /* connections that acquired this key (any of its counters); 0 = none */
    char key[];
} wq_entry;

typedef struct wq_table {
    wq_entry **slots;
    size_t nslots, count;
    double swept;
} wq_table;

/* A fresh counter (refs 1) or NULL (bad limit/window, or no memory). */
wq_counter *wq_counter_new(int64_t limit, double window);
void wq_counter_unref(wq_counter *c);
int wq_available(wq_counter *c, double now);
void wq_take(wq_counter *c, double now);
int wq_idle(const wq_counter *c, double now);

/* A leased counter (limit/window only name it: it admits what its slots hold). */
wq_counter *wq_leased_new(int64_t limit, double window);
/* Add n permits usable in [from, until) to a slot; if the slot held permits of another
 * validity, they are taken out first and their count returned (else 0). Sets the low mark
 * and clears want/reported. */
int64_t wq_lease_put(wq_counter *c, int slot, int64_t n, double from, double until, int64_t low);
/* Take every permit out of a slot; returns how many there were. */
int64_t wq_lease_take_back(wq_counter *c, int slot);
/* Permits usable at `now` in all slots. */
int64_t wq_lease_usable(const wq_counter *c, double now);
/* Collect the times of the admissions made on the credit allowance since the last call (at
 * most `max` into `at`, oldest first; returns how many), then add `add` (>= 0) to the
 * allowance, kept within WQ_CREDIT_MAX with what is still uncollected. Adding clears
 * want/reported like wq_lease_put. */
int wq_lease_credit(wq_counter *c, int64_t add, double *at, int max);
/* Withdraw the credit allowance not used yet; returns it. */
int64_t wq_lease_credit_revoke(wq_counter *c);
/* Python found no room in Redis (or Redis down and nothing to admit): messages without a
 * permit or credit are refused while now < until, held otherwise (-INFINITY, the initial
 * value: never refused). */
void wq_lease_dry(wq_counter *c, double until);
/* The earliest time after `now` a slot's permits become usable (0: none will). */
double wq_lease_next_start(const wq_counter *c, double now);

/* -1 when the message may pass (and was counted against all), else the index of the first
 * counter that has no room (nothing counted). */
int wq_admit(wq_counter *const *counters, int n, double now);
/* wq_admit, except that when the first counter without room is a leased one that is not dry,
 * the message is held: returns WQ_HELD(i) (<= -2, nothing counted), i its index. */
int wq_decide(wq_counter *const *counters, int n, double now);
#define WQ_HELD(i) (-2 - (i))

int wq_table_init(wq_table *t);
void wq_table_free(wq_table *t);
/* The key's counter, a new one when absent or its limit/window differ; the caller holds one
 * reference (give it back with wq_release). NULL on no memory or a bad quota. */
wq_counter *wq_acquire(wq_table *t, const char *key, int64_t limit, double window, double now);
/* The same for a leased counter (leased != 0) or an in-process one. */
wq_counter *wq_acquire_kind(wq_table *t, const char *key, int64_t limit, double window,
                            double now, int leased);
void wq_release(wq_table *t, const char *key, wq_counter *held, double now);
void wq_sweep(wq_table *t, double now);

#endif
