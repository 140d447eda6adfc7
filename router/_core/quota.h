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

/* -1 when the message may pass (and was counted against all), else the index of the first
 * counter that has no room (nothing counted). */
int wq_admit(wq_counter *const *counters, int n, double now);

int wq_table_init(wq_table *t);
void wq_table_free(wq_table *t);
/* The key's counter, a new one when absent or its limit/window differ; the caller holds one
 * reference (give it back with wq_release). NULL on no memory or a bad quota. */
wq_counter *wq_acquire(wq_table *t, const char *key, int64_t limit, double window, double now);
void wq_release(wq_table *t, const char *key, wq_counter *held, double now);
void wq_sweep(wq_table *t, double now);

#endif
