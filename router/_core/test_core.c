/* Unit tests and a time-bounded fuzz of scan.c and quota.c, built and run under
 * AddressSanitizer + UBSan by `make sanitize` (no Python involved).
 *
 * The fuzz feeds random frame streams (valid and broken) split at random points to a plain and
 * a gated scanner, in place (the relay's way: output written over the input's headroom) and
 * into a separate buffer, and checks the invariants the relay relies on: chunking never changes
 * counters, errors or (for a plain scanner) the bytes; a gated scanner admitting everything
 * forwards what the plain one does, up to a held header; in-place equals out-of-place.
 * usage: test_core [seconds] [seed]
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plan.h"
#include "quota.h"
#include "scan.h"

static int failures;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static uint64_t rng_state;
static uint32_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 32);
}

static size_t frame(uint8_t *out, int b0, int masked, const uint8_t *payload, size_t n) {
    size_t i = 0;
    out[i++] = (uint8_t)b0;
    int m = masked ? 0x80 : 0;
    if (n < 126) {
        out[i++] = (uint8_t)(m | n);
    } else if (n < 65536) {
        out[i++] = (uint8_t)(m | 126);
        out[i++] = (uint8_t)(n >> 8);
        out[i++] = (uint8_t)n;
    } else {
        out[i++] = (uint8_t)(m | 127);
        for (int k = 7; k >= 0; k--)
            out[i++] = (uint8_t)((uint64_t)n >> (8 * k));
    }
    uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    if (masked) {
        memcpy(out + i, key, 4);
        i += 4;
    }
    for (size_t k = 0; k < n; k++)
        out[i + k] = masked ? payload[k] ^ key[k & 3] : payload[k];
    return i + n;
}

static int admit_all(void *ctx, int opcode) { return 1; }
static int admit_alternate(void *ctx, int opcode) { return (*(int *)ctx)++ % 2 == 0; }
/* Every message is held once, then admitted when it is fed again. */
static int admit_after_hold(void *ctx, int opcode) { return (*(int *)ctx)++ % 2 ? 1 : WS_HOLD; }

/* feed_chunks (in place), with what a hold leaves unread fed again at once, as the relay feeds
 * its held input when the pool changes; counts the holds. */
static size_t feed_holding(ws_scan *s, const uint8_t *stream, size_t n, const size_t *cuts,
                           int ncuts, uint8_t *out, long *holds) {
    size_t pos = 0, w = 0;
    uint8_t *buf = malloc(n + WS_HEADROOM + 1);
    for (int c = 0; c <= ncuts && !s->err_code; c++) {
        size_t end = c < ncuts ? cuts[c] : n;
        while (pos < end && !s->err_code) {
            size_t len = end - pos;
            memcpy(buf + WS_HEADROOM, stream + pos, len);
            size_t got = ws_scan_feed(s, buf + WS_HEADROOM, len, buf);
            memcpy(out + w, buf, got);
            w += got;
            if (!s->held) {
                pos = end;
                break;
            }
            CHECK(s->held_at < len && got <= s->held_at + WS_HEADROOM);
            (*holds)++;
            pos += s->held_at;
        }
    }
    free(buf);
    return w;
}

/* Feed stream[0:n] in the given chunks, in place; returns the output length. */
static size_t feed_chunks(ws_scan *s, const uint8_t *stream, size_t n, const size_t *cuts,
                          int ncuts, uint8_t *out, int in_place) {
    size_t pos = 0, w = 0;
    uint8_t *buf = malloc(n + WS_HEADROOM + 1);
    for (int c = 0; c <= ncuts && !s->err_code; c++) {
        size_t end = c < ncuts ? cuts[c] : n;
        if (end < pos)
            continue;
        size_t len = end - pos;
        memcpy(buf + WS_HEADROOM, stream + pos, len);
        size_t got;
        if (in_place) {
            got = ws_scan_feed(s, buf + WS_HEADROOM, len, buf);
            memcpy(out + w, buf, got);
        } else {
            got = ws_scan_feed(s, buf + WS_HEADROOM, len, out + w);
        }
        CHECK(got <= len + WS_MAX_HEADER);
        w += got;
        pos = end;
    }
    free(buf);
    return w;
}

static void unit_scan(void) {
    uint8_t buf[256 + WS_HEADROOM], out[512], payload[200];
    memset(payload, 'a', sizeof payload);
    ws_scan s;
    /* a whole masked text frame passes as is */
    size_t n = frame(buf + WS_HEADROOM, 0x81, 1, payload, 5);
    ws_scan_init(&s, 1, 1000, 0, 0, NULL, NULL);
    CHECK(ws_scan_feed(&s, buf + WS_HEADROOM, n, buf) == n && s.frames == 1 && s.messages == 1);
    /* unmasked from the client: 1002 at offset 0 */
    n = frame(buf, 0x81, 0, payload, 5);
    ws_scan_init(&s, 1, 1000, 0, 0, NULL, NULL);
    CHECK(ws_scan_feed(&s, buf, n, out) == 0 && s.err_code == 1002 && s.err_offset == 0);
    /* too big: 1009 */
    n = frame(buf, 0x82, 0, payload, 200);
    ws_scan_init(&s, 0, 100, 0, 0, NULL, NULL);
    ws_scan_feed(&s, buf, n, out);
    CHECK(s.err_code == 1009);
    /* close frame code and reason, masked */
    uint8_t close[] = {0x03, 0xE8, 'b', 'y', 'e'};
    n = frame(buf, 0x88, 1, close, sizeof close);
    ws_scan_init(&s, 1, 1000, 0, 0, NULL, NULL);
    ws_scan_feed(&s, buf, 3, out);
    ws_scan_feed(&s, buf + 3, n - 3, out);
    CHECK(s.close_seen && s.close_code == 1000 && s.close_reason_len == 3 &&
          memcmp(s.close_reason, "bye", 3) == 0);
    /* a refused message is cut, a ping inside passes */
    int turn = 1; /* odd: refuse first */
    size_t m = frame(buf, 0x01, 0, payload, 3);
    m += frame(buf + m, 0x89, 0, payload, 1);
    size_t ping_at = m - 3;
    m += frame(buf + m, 0x80, 0, payload, 3);
    ws_scan_init(&s, 0, 1000, 0, 1, admit_alternate, &turn);
    size_t w = ws_scan_feed(&s, buf, m, out);
    CHECK(w == 3 && memcmp(out, buf + ping_at, 3) == 0 && s.dropped == 1 && s.messages == 1);
    /* to_boundary stops at the end of the frame in flight */
    n = frame(buf, 0x82, 0, payload, 100);
    ws_scan_init(&s, 0, 1000, 0, 0, NULL, NULL);
    ws_scan_feed(&s, buf, 10, out);
    CHECK(!ws_scan_out_at_boundary(&s));
    memcpy(buf + n, buf, n);
    CHECK(ws_scan_to_boundary(&s, buf + 10, 2 * n - 10) == (long)(n - 10));
    CHECK(ws_scan_out_at_boundary(&s));
    /* a held message: what precedes it goes out, it and what follows are left unread */
    m = frame(buf, 0x89, 0, payload, 2); /* a ping, then text "abc", then a pong */
    size_t text_at = m;
    m += frame(buf + m, 0x81, 0, payload, 3);
    m += frame(buf + m, 0x8A, 0, payload, 0);
    turn = 0;
    ws_scan_init(&s, 0, 1000, 0, 1, admit_after_hold, &turn);
    w = ws_scan_feed(&s, buf, m, out);
    CHECK(s.held && s.held_at == text_at && w == text_at && memcmp(out, buf, w) == 0);
    CHECK(s.frames == 1 && s.messages == 0 && s.bytes == text_at && ws_scan_out_at_boundary(&s));
    w = ws_scan_feed(&s, buf + text_at, m - text_at, out); /* fed again: admitted */
    CHECK(!s.held && w == m - text_at && s.frames == 3 && s.messages == 1 && s.bytes == m);
    /* the fast path (one whole frame) and a header split across feeds hold the same way */
    n = frame(buf, 0x82, 0, payload, 4);
    turn = 0;
    ws_scan_init(&s, 0, 1000, 0, 1, admit_after_hold, &turn);
    CHECK(ws_scan_feed(&s, buf, n, out) == 0 && s.held && s.held_at == 0 && s.frames == 0);
    CHECK(s.bytes == 0 && s.messages == 0);
    CHECK(ws_scan_feed(&s, buf, n, out) == n && !s.held && s.messages == 1 && s.bytes == n);
    n = frame(buf, 0x82, 0, payload, 130); /* a 4-byte header: split after its first byte */
    turn = 0;
    ws_scan_init(&s, 0, 1000, 0, 1, admit_after_hold, &turn);
    CHECK(ws_scan_feed(&s, buf, 1, out) == 0 && !s.held && s.partial_len == 1);
    CHECK(ws_scan_feed(&s, buf + 1, n - 1, out) == 0 && s.held && s.held_at == 0);
    CHECK(s.partial_len == 1 && s.bytes == 1 && s.frames == 0);
    CHECK(ws_scan_feed(&s, buf + 1, n - 1, out) == n && !s.held && s.frames == 1);
    CHECK(memcmp(out, buf, n) == 0 && s.bytes == n);
}

/* A leased counter admits exactly the permits put in it, each only inside its slot's
 * validity; taking back returns the rest; it asks for more (want) at the low mark or when a
 * message found nothing, and ConnectionThrottle's all-or-nothing holds with it. */
static void unit_leased(void) {
    wq_table t;
    CHECK(wq_table_init(&t) == 0);
    wq_counter *c = wq_acquire_kind(&t, "api:g", 5, 1.0, 0.0, 1);
    CHECK(c && c->leased);
    CHECK(wq_admit(&c, 1, 0.0) == 0 && c->want && c->refused == 1); /* empty: refused */
    CHECK(wq_lease_put(c, 0, 3, 0.0, 1.0, 1) == 0 && !c->want);
    CHECK(wq_lease_usable(c, 0.5) == 3 && wq_lease_usable(c, 1.0) == 0);
    CHECK(wq_admit(&c, 1, 0.1) == -1 && !c->want);
    CHECK(wq_admit(&c, 1, 0.2) == -1 && c->want); /* 1 left = the low mark */
    CHECK(wq_admit(&c, 1, 1.0) == 0);             /* the slot's sub-window is over */
    CHECK(wq_lease_put(c, 1, 2, 1.0, 2.0, 0) == 0);
    CHECK(wq_admit(&c, 1, 0.9) == -1 && c->slot[0].n == 0 && c->slot[1].n == 2); /* slot 0 */
    CHECK(wq_admit(&c, 1, 0.95) == 0); /* slot 1 is not usable yet */
    CHECK(wq_admit(&c, 1, 1.5) == -1 && c->slot[1].n == 1);
    CHECK(wq_lease_put(c, 1, 4, 2.0, 3.0, 0) == 1); /* another validity: the old one back */
    CHECK(wq_lease_put(c, 1, 1, 2.0, 3.0, 0) == 0 && c->slot[1].n == 5);
    CHECK(wq_lease_take_back(c, 1) == 5 && wq_lease_take_back(c, 1) == 0);
    /* at the edge of two adjacent leases, a message takes a permit of both */
    wq_lease_put(c, 0, 2, 0.0, 2.99, 0);
    wq_lease_put(c, 1, 2, 3.01, 4.0, 0);
    CHECK(wq_admit(&c, 1, 3.0) == -1 && c->slot[0].n == 1 && c->slot[1].n == 1);
    wq_lease_put(c, 1, 0, 4.5, 5.0, 0); /* not adjacent: no edge rule */
    wq_lease_put(c, 1, 1, 4.5, 5.0, 0);
    CHECK(wq_admit(&c, 1, 3.0) == 0);
    wq_lease_take_back(c, 0);
    wq_lease_take_back(c, 1);
    CHECK(c->used == 5);
    /* with an in-process counter: a message passes only if both have room */
    wq_counter *q[2] = {wq_acquire(&t, "sub:x", 10, 1.0, 0.0), c};
    CHECK(wq_admit(q, 2, 2.5) == 1 && q[0]->len == 0);
    wq_lease_put(c, 2, 1, 2.0, 3.0, 0);
    CHECK(wq_admit(q, 2, 2.5) == -1 && q[0]->len == 1 && c->slot[2].n == 0);
    CHECK(!wq_idle(c, 10.0) || c->slot[2].n == 0);
    wq_lease_put(c, 2, 1, 9.0, 9.5, 0);
    CHECK(!wq_idle(c, 10.0)); /* permits left: Python takes them back before it is forgotten */
    wq_lease_take_back(c, 2);
    CHECK(wq_idle(c, 10.0));
    CHECK(wq_lease_put(c, 7, 1, 0.0, 1.0, 0) == 0 && wq_lease_take_back(c, -1) == 0);
    wq_release(&t, "sub:x", q[0], 10.0);
    wq_release(&t, "api:g", c, 10.0);
    CHECK(t.count == 0);
    wq_table_free(&t);
}

/* The credit allowance: a message finding no usable permit passes on it (as router/lease.py's
 * take passes on credit) and its time is kept for Python to charge; permits come first; the
 * allowance is bounded, collected in order, and withdrawn by revoke. */
static void unit_leased_credit(void) {
    wq_table t;
    double at[WQ_CREDIT_MAX];
    CHECK(wq_table_init(&t) == 0);
    wq_counter *c = wq_acquire_kind(&t, "api:c", 5, 1.0, 0.0, 1);
    CHECK(wq_lease_credit(c, 2, at, WQ_CREDIT_MAX) == 0 && c->allow == 2);
    wq_lease_put(c, 0, 1, 0.0, 1.0, 0);
    CHECK(wq_admit(&c, 1, 0.1) == -1 && c->allow == 2 && c->ncredit == 0); /* the permit */
    c->want = c->reported = 1;
    CHECK(wq_admit(&c, 1, 0.2) == -1 && c->allow == 1 && c->ncredit == 1);
    CHECK(wq_admit(&c, 1, 1.5) == -1 && c->allow == 0 && c->ncredit == 2); /* any time */
    CHECK(wq_admit(&c, 1, 1.6) == 0 && c->refused == 1);                  /* used up */
    CHECK(!wq_idle(c, 100.0)); /* not collected yet */
    CHECK(wq_lease_credit(c, 0, at, 1) == 1 && at[0] == 0.2 && c->reported); /* oldest first */
    CHECK(wq_lease_credit(c, 3, at, WQ_CREDIT_MAX) == 1 && at[0] == 1.5);
    CHECK(c->allow == 3 && !c->want && !c->reported); /* topped up: may report again */
    CHECK(wq_admit(&c, 1, 1.7) == -1 && c->want && c->ncredit == 1);
    CHECK(wq_lease_credit_revoke(c) == 2 && c->allow == 0 && wq_admit(&c, 1, 1.8) == 0);
    CHECK(wq_lease_credit(c, 0, at, WQ_CREDIT_MAX) == 1 && at[0] == 1.7);
    CHECK(wq_lease_credit(c, 1000, at, WQ_CREDIT_MAX) == 0 && c->allow == WQ_CREDIT_MAX);
    for (int i = 0; i < WQ_CREDIT_MAX + 3; i++)
        wq_admit(&c, 1, 2.0 + i);
    CHECK(c->allow == 0 && c->ncredit == WQ_CREDIT_MAX);
    CHECK(wq_lease_credit(c, 5, at, 0) == 0 && c->allow == 0); /* no room while uncollected */
    CHECK(wq_lease_credit(c, 0, at, WQ_CREDIT_MAX) == WQ_CREDIT_MAX && at[63] == 2.0 + 63);
    CHECK(wq_idle(c, 1000.0));
    wq_release(&t, "api:c", c, 1000.0);
    CHECK(t.count == 0);
    wq_table_free(&t);
}

/* Holding (the relay's wq_decide): a leased counter with neither permit nor credit holds the
 * message unless Python said the window is exhausted (dry); puts, credit and dry changes move
 * its generation (held messages are fed again); the next slot start is the core's timer. */
static void unit_leased_hold(void) {
    wq_table t;
    CHECK(wq_table_init(&t) == 0);
    wq_counter *c = wq_acquire_kind(&t, "api:h", 5, 1.0, -50.0, 1);
    wq_counter *q[2] = {wq_acquire(&t, "sub:h", 1, 1.0, -50.0), c};
    uint64_t gen = c->gen;
    CHECK(wq_decide(&c, 1, -10.0) == WQ_HELD(0) && c->waits == 1 && c->refused == 0 && c->want);
    CHECK(wq_admit(&c, 1, -10.0) == 0 && c->refused == 1); /* wq_admit never holds */
    CHECK(wq_decide(q, 2, -10.0) == WQ_HELD(1) && q[0]->len == 0); /* nothing counted */
    wq_lease_put(c, 1, 2, -9.0, -8.0, 0);
    CHECK(c->gen != gen && wq_lease_next_start(c, -10.0) == -9.0);
    CHECK(wq_lease_next_start(c, -9.0) == 0 && wq_decide(&c, 1, -9.5) == WQ_HELD(0));
    CHECK(wq_decide(q, 2, -9.0) == -1 && q[0]->len == 1 && c->slot[1].n == 1);
    CHECK(wq_decide(q, 2, -8.9) == 0 && c->slot[1].n == 1); /* the in-process one refuses */
    gen = c->gen;
    wq_lease_dry(c, -8.0);
    CHECK(c->gen != gen && wq_decide(&c, 1, -8.5) == -1); /* permits still come first */
    CHECK(wq_decide(&c, 1, -8.4) == 0 && c->refused == 2); /* dry: refused */
    CHECK(wq_decide(&c, 1, -8.0) == WQ_HELD(0));           /* dry no more: held */
    gen = c->gen;
    wq_lease_dry(c, -8.0); /* no change, no generation */
    CHECK(c->gen == gen);
    double at[WQ_CREDIT_MAX];
    wq_lease_credit(c, 1, at, WQ_CREDIT_MAX);
    CHECK(c->gen != gen && wq_decide(&c, 1, -7.0) == -1 && wq_decide(&c, 1, -7.0) == WQ_HELD(0));
    wq_lease_credit(c, 0, at, WQ_CREDIT_MAX);
    wq_release(&t, "sub:h", q[0], 100.0);
    wq_release(&t, "api:h", c, 100.0);
    CHECK(t.count == 0);
    wq_table_free(&t);
}

static void unit_quota(void) {
    wq_table t;
    CHECK(wq_table_init(&t) == 0);
    wq_counter *c = wq_acquire(&t, "api:a", 2, 1.0, 0.0);
    CHECK(wq_admit(&c, 1, 0.0) == -1 && wq_admit(&c, 1, 0.0) == -1 && wq_admit(&c, 1, 0.5) == 0);
    CHECK(wq_admit(&c, 1, 1.0) == -1);
    wq_counter *b = wq_acquire(&t, "sub:a", WQ_EXACT_LIMIT + 1, 1.0, 0.0);
    CHECK(b->bucket);
    int passed = 0;
    for (int i = 0; i < WQ_EXACT_LIMIT + 10; i++)
        passed += wq_admit(&b, 1, 0.0) < 0;
    CHECK(passed == WQ_EXACT_LIMIT + 1);
    wq_counter *changed = wq_acquire(&t, "api:a", 5, 1.0, 0.0); /* policy changed: fresh */
    CHECK(changed != c && t.count == 2);
    wq_release(&t, "api:a", c, 0.5);
    wq_release(&t, "api:a", changed, 0.5);
    wq_release(&t, "sub:a", b, 0.5);
    CHECK(t.count == 1); /* sub:a kept until idle; api:a's new counter never used */
    wq_sweep(&t, 100.0);
    CHECK(t.count == 0);
    CHECK(wq_counter_new(0, 1.0) == NULL && wq_counter_new(1, 0.0) == NULL);
    wq_table_free(&t);
}

static size_t random_stream(uint8_t *out, size_t cap, int masked) {
    static const size_t sizes[] = {0, 1, 2, 64, 125, 126, 300, 4096, 5001, 65536};
    static const int ops[] = {0, 1, 2, 8, 9, 10, 3, 0xB};
    static uint8_t payload[65536 + 2];
    size_t n = 0;
    int frames = 1 + (int)(rnd() % 12);
    for (int f = 0; f < frames; f++) {
        int op = ops[rnd() % 8];
        size_t size = sizes[rnd() % 10];
        if (op >= 8 && rnd() % 6)
            size = size > 125 ? 125 : size;
        if (n + size + 14 > cap)
            break;
        for (size_t k = 0; k < size; k++)
            payload[k] = (uint8_t)(k & 1 ? 0xE8 : 0x03);
        int b0 = op | (rnd() % 4 ? 0x80 : 0);
        if (rnd() % 20 == 0)
            b0 |= 0x40;
        size_t at = n;
        n += frame(out + n, b0, (rnd() % 16) ? masked : !masked, payload, size);
        if (rnd() % 40 == 0) /* a random corrupt header byte */
            out[at + rnd() % 2] ^= (uint8_t)(1u << (rnd() % 8));
    }
    return n;
}

static void fuzz(double seconds) {
    size_t cap = 1 << 20;
    uint8_t *stream = malloc(cap), *a = malloc(2 * cap), *b = malloc(2 * cap), *c = malloc(2 * cap);
    size_t cuts[32];
    clock_t until = clock() + (clock_t)(seconds * CLOCKS_PER_SEC);
    long rounds = 0, holds = 0;
    while (clock() < until) {
        int masked = (int)(rnd() % 2);
        uint64_t limit = (rnd() % 2) ? 5000 : 0;
        size_t n = random_stream(stream, cap, masked);
        int ncuts = (int)(rnd() % 32);
        for (int i = 0; i < ncuts; i++)
            cuts[i] = n ? rnd() % (n + 1) : 0;
        for (int i = 1; i < ncuts; i++) /* sort */
            for (int j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
                size_t t = cuts[j];
                cuts[j] = cuts[j - 1];
                cuts[j - 1] = t;
            }
        ws_scan whole, plain, gated, refusing, holding;
        int turn = 0, hturn = 0;
        ws_scan_init(&whole, masked, limit, 0, 0, NULL, NULL);
        ws_scan_init(&plain, masked, limit, 0, 0, NULL, NULL);
        ws_scan_init(&gated, masked, limit, 0, 1, admit_all, NULL);
        ws_scan_init(&refusing, masked, limit, 0, 1, admit_alternate, &turn);
        ws_scan_init(&holding, masked, limit, 0, 1, admit_after_hold, &hturn);
        size_t wn = feed_chunks(&whole, stream, n, NULL, 0, a, 0);
        size_t pn = feed_chunks(&plain, stream, n, cuts, ncuts, b, 1);
        size_t gn = feed_chunks(&gated, stream, n, cuts, ncuts, c, rnd() % 2);
        feed_chunks(&refusing, stream, n, cuts, ncuts, c + cap, 1);
        /* holding each message once changes nothing of what goes out, nor any counter */
        size_t hn = feed_holding(&holding, stream, n, cuts, ncuts, a + cap, &holds);
        CHECK(holding.err_code == gated.err_code && holding.frames == gated.frames);
        CHECK(holding.messages == gated.messages && holding.bytes == gated.bytes);
        CHECK(holding.close_code == gated.close_code && holding.dropped == 0);
        CHECK(hn == gn && memcmp(a + cap, c, gn) == 0);
        CHECK(whole.err_code == plain.err_code && whole.frames == plain.frames);
        CHECK(whole.messages == plain.messages && whole.close_code == plain.close_code);
        CHECK(gated.err_code == plain.err_code && gated.frames == plain.frames);
        CHECK(refusing.err_code == plain.err_code && refusing.frames == plain.frames);
        CHECK(gn <= pn && pn - gn < WS_MAX_HEADER && memcmp(b, c, gn) == 0);
        if (!plain.err_code) {
            CHECK(wn == n && pn == n && memcmp(a, stream, n) == 0 && memcmp(b, stream, n) == 0);
        } else if (!whole.err_code || whole.err_offset < 0) {
            CHECK(0);
        }
        if (failures) {
            fprintf(stderr, "fuzz failed at round %ld (stream %zu bytes)\n", rounds, n);
            break;
        }
        rounds++;
    }
    printf("fuzz: %ld random streams (%ld holds), %s\n", rounds, holds,
           failures ? "FAILED" : "ok");
    free(stream);
    free(a);
    free(b);
    free(c);
}


/* ---- plan.c: SHA-1 (FIPS 180 examples), base64 (RFC 4648), accept (RFC 6455), plans ---- */

static void hexof(const uint8_t *p, size_t n, char *out) {
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static int sha1_is(const char *msg, size_t n, const char *want) {
    uint8_t d[20];
    char hex[41];
    hp_sha1((const uint8_t *)msg, n, d);
    hexof(d, 20, hex);
    return strcmp(hex, want) == 0;
}

static int b64_is(const char *in, const char *want) {
    char out[64];
    size_t n = hp_base64((const uint8_t *)in, strlen(in), out);
    return n == strlen(want) && memcmp(out, want, n) == 0;
}

static const char HEAD[] = "GET /chat?x=1 HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer t\r\n\r\n";

static hp_plan *plan_of(const char *head, const char *peer, uint64_t id, double expires) {
    hp_plan *p = calloc(1, sizeof *p);
    size_t n = strlen(head), key;
    CHECK(hp_key_span((const uint8_t *)head, n, &p->vs, &p->ve, &key));
    p->head = malloc(n);
    memcpy(p->head, head, n);
    p->head_len = n;
    snprintf(p->peer, sizeof p->peer, "%s", peer);
    p->id = id;
    p->expires = expires;
    p->hash = hp_hash(p->head, n, p->vs, p->ve, p->peer);
    return p;
}

static hp_plan *find_head(hp_table *t, const char *head, const char *peer, double now) {
    size_t vs, ve, key, n = strlen(head);
    if (!hp_key_span((const uint8_t *)head, n, &vs, &ve, &key))
        return NULL;
    return hp_find(t, (const uint8_t *)head, n, vs, ve, peer, now);
}

static char *with(const char *from, const char *to) { /* HEAD with one substring replaced */
    static char buf[1024];
    const char *at = strstr(HEAD, from);
    assert(at);
    size_t a = (size_t)(at - HEAD);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)a, HEAD, to, at + strlen(from));
    return buf;
}

static void unit_plan(void) {
    CHECK(sha1_is("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d"));
    CHECK(sha1_is("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709"));
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK(sha1_is(two, strlen(two), "84983e441c3bd26ebaae4aa1f95129e5e54670f1"));
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    CHECK(sha1_is(million, 1000000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"));
    free(million);
    CHECK(b64_is("", ""));
    CHECK(b64_is("f", "Zg=="));
    CHECK(b64_is("fo", "Zm8="));
    CHECK(b64_is("foo", "Zm9v"));
    CHECK(b64_is("foob", "Zm9vYg=="));
    CHECK(b64_is("fooba", "Zm9vYmE="));
    CHECK(b64_is("foobar", "Zm9vYmFy"));
    char acc[HP_ACCEPT_LEN];
    hp_accept((const uint8_t *)"dGhlIHNhbXBsZSBub25jZQ==", 24, acc);
    CHECK(memcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", HP_ACCEPT_LEN) == 0);
    uint8_t raw[16];
    for (int i = 0; i < 16; i++)
        raw[i] = (uint8_t)(i * 17);
    char rid[HP_RID_LEN];
    hp_hex16(raw, rid);
    CHECK(memcmp(rid, "00112233445566778899aabbccddeeff", HP_RID_LEN) == 0);

    /* the key span */
    size_t vs, ve, key, n = strlen(HEAD);
    CHECK(hp_key_span((const uint8_t *)HEAD, n, &vs, &ve, &key));
    CHECK(memcmp(HEAD + key, "dGhlIHNhbXBsZSBub25jZQ==", 24) == 0);
    CHECK(HEAD[vs] == ' ' && HEAD[ve] == '\r');
    CHECK(hp_key_span((const uint8_t *)with("Sec-WebSocket-Key", "sec-websocket-KEY"), n, &vs,
                      &ve, &key));
    const char *bad[] = {
        "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ==x", "dGhlIHNhbXBsZSBub25jZQ=A",
        "dGhlIHNhbXBsZSBub25jZ!==", "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: "
                                    "dGhlIHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZQ==\r\n folded"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *h = with("dGhlIHNhbXBsZSBub25jZQ==", bad[i]);
        CHECK(!hp_key_span((const uint8_t *)h, strlen(h), &vs, &ve, &key));
    }
    const char *none = with("Sec-WebSocket-Key", "Sec-WebSocket-Kex");
    CHECK(!hp_key_span((const uint8_t *)none, strlen(none), &vs, &ve, &key));
    const char *spaced = with(": dGhlIHNhbXBsZSBub25jZQ==", ":\tAAAAAAAAAAAAAAAAAAAAAA== ");
    CHECK(hp_key_span((const uint8_t *)spaced, strlen(spaced), &vs, &ve, &key));
    CHECK(memcmp(spaced + key, "AAAAAAAAAAAAAAAAAAAAAA==", 24) == 0);

    /* the table: only the key may differ; peer, expiry and every other byte count */
    hp_table t = {0};
    int err;
    hp_plan *p = plan_of(HEAD, "127.0.0.1", 1, 100.0);
    CHECK(hp_insert(&t, p, &err) == NULL && !err);
    CHECK(find_head(&t, HEAD, "127.0.0.1", 1.0) == p);
    CHECK(find_head(&t, with("dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAAAA=="),
                    "127.0.0.1", 1.0) == p);
    CHECK(find_head(&t, HEAD, "127.0.0.2", 1.0) == NULL);
    CHECK(find_head(&t, HEAD, "127.0.0.1", 100.0) == NULL); /* expired */
    CHECK(find_head(&t, with("Bearer t", "Bearer u"), "127.0.0.1", 1.0) == NULL);
    CHECK(find_head(&t, with("Host: a", "host: a"), "127.0.0.1", 1.0) == NULL);
    CHECK(find_head(&t, with("\r\n\r\n", "\r\nX-Request-ID: r\r\n\r\n"), "127.0.0.1", 1.0) ==
          NULL);
    CHECK(find_head(&t, with(": dGhlIHNhbXBsZSBub25jZQ==", ":  dGhlIHNhbXBsZSBub25jZQ=="),
                    "127.0.0.1", 1.0) == NULL); /* another length: another head */
    for (uint64_t i = 2; i < 300; i++) {      /* growth keeps every plan findable */
        char h[1024];
        snprintf(h, sizeof h, "%.*sX-N: %llu\r\n\r\n", (int)(n - 2), HEAD,
                 (unsigned long long)i);
        CHECK(hp_insert(&t, plan_of(h, "::1", i, 100.0), &err) == NULL && !err);
    }
    CHECK(t.count == 299 && find_head(&t, HEAD, "127.0.0.1", 1.0) == p);
    CHECK(hp_by_id(&t, 150) != NULL && hp_by_id(&t, 1) == p);
    hp_plan *again = plan_of(HEAD, "127.0.0.1", 1000, 100.0);
    CHECK(hp_insert(&t, again, &err) == p && p->dead); /* the same head replaces */
    CHECK(find_head(&t, HEAD, "127.0.0.1", 1.0) == again);
    hp_free(p);
    CHECK(hp_remove(&t, again) && again->dead && !hp_remove(&t, again));
    CHECK(find_head(&t, HEAD, "127.0.0.1", 1.0) == NULL);
    hp_free(again);
    for (size_t i = 0; i < t.nslots; i++)
        while (t.slots[i]) {
            hp_plan *q = t.slots[i];
            hp_remove(&t, q);
            hp_free(q);
        }
    CHECK(t.count == 0);
    free(t.slots);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 15.0;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : (uint64_t)time(NULL);
    rng_state = seed ? seed : 1;
    printf("test_core: seed %llu, fuzz %.0f s (rerun: test_core %.0f %llu)\n",
           (unsigned long long)seed, seconds, seconds, (unsigned long long)seed);
    unit_scan();
    unit_quota();
    unit_leased();
    unit_leased_credit();
    unit_plan();
    unit_leased_hold();
    printf("unit tests: %s\n", failures ? "FAILED" : "ok");
    if (!failures)
        fuzz(seconds);
    return failures ? 1 : 0;
}
