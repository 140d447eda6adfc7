/* Quota counters: see quota.h. Mirrors router/throttle.py (SlidingWindow, TokenBucket,
 * CounterTable, ConnectionThrottle.admit). */
#include "quota.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

wq_counter *wq_counter_new(int64_t limit, double window) {
    if (limit < 1 || !(window > 0))
        return NULL;
    wq_counter *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->refs = 1;
    c->limit = limit;
    c->window = window;
    c->last = -INFINITY;
    c->bucket = limit > WQ_EXACT_LIMIT;
    if (c->bucket) {
        c->rate = (double)limit / window;
        c->tokens = (double)limit;
        c->stamp = -INFINITY;
    }
    return c;
}

wq_counter *wq_leased_new(int64_t limit, double window) {
    wq_counter *c = wq_counter_new(limit, window);
    if (c) {
        c->leased = 1;
        c->bucket = 0;
        c->low = -1;
        c->dry_until = -INFINITY;
    }
    return c;
}

static int slot_usable(const wq_slot *s, double now) {
    return s->n > 0 && s->from <= now && now < s->until;
}

int64_t wq_lease_usable(const wq_counter *c, double now) {
    int64_t n = 0;
    for (int i = 0; i < WQ_SLOTS; i++)
        if (slot_usable(&c->slot[i], now))
            n += c->slot[i].n;
    return n;
}

int64_t wq_lease_put(wq_counter *c, int slot, int64_t n, double from, double until, int64_t low) {
    if (slot < 0 || slot >= WQ_SLOTS)
        return 0;
    wq_slot *s = &c->slot[slot];
    int64_t back = 0;
    if (s->from != from || s->until != until) {
        back = s->n;
        s->n = 0;
        s->from = from;
        s->until = until;
    }
    if (n > 0)
        s->n += n;
    c->low = low;
    c->want = c->reported = 0;
    c->gen++;
    return back;
}

int64_t wq_lease_take_back(wq_counter *c, int slot) {
    if (slot < 0 || slot >= WQ_SLOTS)
        return 0;
    int64_t n = c->slot[slot].n;
    c->slot[slot].n = 0;
    return n;
}

/* Between the lease in use (slot 0) and the next sub-window's (slot 1), within the clock's
 * uncertainty of their edge and holding a permit of both: such a message is charged to both,
 * whichever sub-window it falls in (router/lease.py's _at_edge). Adjacent sub-windows only:
 * their gap is the guard on each side, far less than half a sub-window. */
static int at_edge(const wq_counter *c, double now) {
    const wq_slot *cur = &c->slot[0], *next = &c->slot[1];
    return cur->n > 0 && next->n > 0 && now >= cur->until && now < next->from &&
           next->from - cur->until < (next->until - next->from) / 2;
}

/* No usable permit: the message passes on the credit allowance if there is some left, as
 * router/lease.py's take would pass it on credit (the allowance is what its credit rule
 * admits, given ahead), instead of waiting for the pump. */
static int credit_left(const wq_counter *c) {
    return c->allow > 0 && c->ncredit < WQ_CREDIT_MAX;
}

/* 1: a permit or credit; 0: none; 2 (may_hold): none but the window is not known to be
 * exhausted, the message waits for the pool to be topped up. */
static int leased_available(wq_counter *c, double now, int may_hold) {
    for (int i = 0; i < WQ_SLOTS; i++)
        if (slot_usable(&c->slot[i], now))
            return 1;
    if (at_edge(c, now) || credit_left(c))
        return 1;
    c->want = 1;
    if (may_hold && !(now < c->dry_until)) {
        c->waits++;
        return 2;
    }
    c->refused++;
    return 0;
}

static void leased_take(wq_counter *c, double now) {
    c->last = now;
    for (int i = 0; i < WQ_SLOTS; i++) {
        if (slot_usable(&c->slot[i], now)) {
            c->slot[i].n--;
            c->used++;
            /* the usable total is at least this slot's: only near the mark is it summed */
            if (!c->want && c->slot[i].n <= c->low && wq_lease_usable(c, now) <= c->low)
                c->want = 1;
            return;
        }
    }
    if (at_edge(c, now)) {
        c->slot[0].n--;
        c->slot[1].n--;
        c->used++;
    } else if (credit_left(c)) {
        c->allow--;
        c->credit_at[c->ncredit++] = now;
        c->used++;
        c->want = 1; /* Python charges it and tops the pool up */
        return;
    }
    if (!c->want && wq_lease_usable(c, now) <= c->low)
        c->want = 1;
}

int wq_lease_credit(wq_counter *c, int64_t add, double *at, int max) {
    int n = max < 0 ? 0 : (uint32_t)max < c->ncredit ? max : (int)c->ncredit;
    if (n) {
        memcpy(at, c->credit_at, (size_t)n * sizeof *at);
        c->ncredit -= (uint32_t)n;
        memmove(c->credit_at, c->credit_at + n, c->ncredit * sizeof *at);
    }
    if (add > 0) {
        int64_t room = WQ_CREDIT_MAX - (int64_t)c->ncredit - c->allow;
        c->allow += add < room ? add : (room > 0 ? room : 0);
        c->want = c->reported = 0;
        c->gen++;
    }
    return n;
}

void wq_lease_dry(wq_counter *c, double until) {
    if (c->dry_until != until) {
        c->dry_until = until;
        c->gen++;
    }
}

double wq_lease_next_start(const wq_counter *c, double now) {
    double next = 0;
    for (int i = 0; i < WQ_SLOTS; i++) {
        const wq_slot *s = &c->slot[i];
        if (s->n > 0 && s->from > now && s->from < s->until && (!next || s->from < next))
            next = s->from;
    }
    return next;
}

int64_t wq_lease_credit_revoke(wq_counter *c) {
    int64_t n = c->allow;
    c->allow = 0;
    return n;
}

void wq_counter_unref(wq_counter *c) {
    if (c && --c->refs == 0) {
        free(c->ring);
        free(c);
    }
}

static void refill(wq_counter *c, double now) {
    if (now > c->stamp) {
        double tokens = c->tokens + (now - c->stamp) * c->rate;
        c->tokens = tokens < (double)c->limit ? tokens : (double)c->limit;
        c->stamp = now;
    }
}

int wq_available(wq_counter *c, double now) {
    if (__builtin_expect(c->leased, 0))
        return leased_available(c, now, 0);
    if (c->bucket) {
        refill(c, now);
        return c->tokens >= 1.0;
    }
    return (int64_t)c->len < c->limit || c->ring[c->head] <= now - c->window;
}

void wq_take(wq_counter *c, double now) {
    if (__builtin_expect(c->leased, 0)) {
        leased_take(c, now);
        return;
    }
    c->last = now;
    if (c->bucket) {
        if (now != c->stamp)
            refill(c, now);
        c->tokens -= 1.0;
        return;
    }
    if ((int64_t)c->len < c->limit) {
        if (c->len == c->cap) {
            uint32_t cap = c->cap ? c->cap * 2 : 4;
            if ((int64_t)cap > c->limit)
                cap = (uint32_t)c->limit;
            double *ring = realloc(c->ring, cap * sizeof *ring);
            if (!ring) { /* no memory: the ring acts as full (stricter, never looser) */
                c->limit = c->len ? c->len : 1;
                if (!c->len)
                    return;
                c->ring[c->head] = now;
                c->head = (c->head + 1) % c->len;
                return;
            }
            c->ring = ring;
            c->cap = cap;
        }
        c->ring[c->len++] = now;
    } else {
        c->ring[c->head] = now;
        c->head = (uint32_t)((c->head + 1) % (uint64_t)c->limit);
    }
}

int wq_idle(const wq_counter *c, double now) {
    if (c->leased) { /* permits or credit still in it: Python has to take them back first */
        if (c->allow > 0 || c->ncredit > 0)
            return 0;
        for (int i = 0; i < WQ_SLOTS; i++)
            if (c->slot[i].n > 0)
                return 0;
    }
    return c->last <= now - c->window;
}

int wq_admit(wq_counter *const *counters, int n, double now) {
    for (int i = 0; i < n; i++)
        if (!wq_available(counters[i], now))
            return i;
    for (int i = 0; i < n; i++)
        wq_take(counters[i], now);
    return -1;
}

int wq_decide(wq_counter *const *counters, int n, double now) {
    for (int i = 0; i < n; i++) {
        wq_counter *c = counters[i];
        if (__builtin_expect(c->leased, 0)) {
            int r = leased_available(c, now, 1);
            if (r == 2)
                return WQ_HELD(i);
            if (!r)
                return i;
        } else if (!wq_available(c, now)) {
            return i;
        }
    }
    for (int i = 0; i < n; i++)
        wq_take(counters[i], now);
    return -1;
}

static size_t hash_key(const char *key) {
    size_t h = 1469598103934665603ULL;
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 1099511628211ULL;
    return h;
}

int wq_table_init(wq_table *t) {
    memset(t, 0, sizeof *t);
    t->nslots = 64;
    t->slots = calloc(t->nslots, sizeof *t->slots);
    return t->slots ? 0 : -1;
}

void wq_table_free(wq_table *t) {
    for (size_t i = 0; i < t->nslots; i++) {
        wq_entry *e = t->slots[i];
        while (e) {
            wq_entry *next = e->next;
            wq_counter_unref(e->counter);
            free(e);
            e = next;
        }
    }
    free(t->slots);
    t->slots = NULL;
    t->nslots = t->count = 0;
}

static wq_entry **find(wq_table *t, const char *key) {
    wq_entry **at = &t->slots[hash_key(key) & (t->nslots - 1)];
    while (*at && strcmp((*at)->key, key) != 0)
        at = &(*at)->next;
    return at;
}

static void grow(wq_table *t) {
    size_t nslots = t->nslots * 2;
    wq_entry **slots = calloc(nslots, sizeof *slots);
    if (!slots)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < t->nslots; i++) {
        wq_entry *e = t->slots[i];
        while (e) {
            wq_entry *next = e->next;
            size_t j = hash_key(e->key) & (nslots - 1);
            e->next = slots[j];
            slots[j] = e;
            e = next;
        }
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = nslots;
}

static void drop(wq_table *t, wq_entry **at) {
    wq_entry *e = *at;
    *at = e->next;
    wq_counter_unref(e->counter);
    free(e);
    t->count--;
}

wq_counter *wq_acquire(wq_table *t, const char *key, int64_t limit, double window, double now) {
    return wq_acquire_kind(t, key, limit, window, now, 0);
}

wq_counter *wq_acquire_kind(wq_table *t, const char *key, int64_t limit, double window,
                            double now, int leased) {
    if (now - t->swept > WQ_SWEEP_INTERVAL)
        wq_sweep(t, now);
    wq_entry **at = find(t, key);
    wq_entry *e = *at;
    if (!e || e->counter->limit != limit || e->counter->window != window ||
        e->counter->leased != !!leased) {
        wq_counter *c = leased ? wq_leased_new(limit, window) : wq_counter_new(limit, window);
        if (!c)
            return NULL;
        if (!e) {
            size_t klen = strlen(key);
            e = calloc(1, sizeof *e + klen + 1);
            if (!e) {
                wq_counter_unref(c);
                return NULL;
            }
            memcpy(e->key, key, klen + 1);
            *at = e;
            t->count++;
        } else {
            wq_counter_unref(e->counter);
        }
        e->counter = c;
    }
    e->refs++;
    e->counter->refs++;
    if (t->count > t->nslots)
        grow(t);
    return e->counter;
}

void wq_release(wq_table *t, const char *key, wq_counter *held, double now) {
    wq_entry **at = find(t, key);
    wq_entry *e = *at;
    if (e) {
        if (e->refs > 1) {
            e->refs--;
        } else {
            e->refs = 0;
            if (wq_idle(e->counter, now))
                drop(t, at);
        }
    }
    wq_counter_unref(held);
}

void wq_sweep(wq_table *t, double now) {
    t->swept = now;
    for (size_t i = 0; i < t->nslots; i++) {
        wq_entry **at = &t->slots[i];
        while (*at) {
            if (!(*at)->refs && wq_idle((*at)->counter, now))
                drop(t, at);
            else
                at = &(*at)->next;
        }
    }
}
