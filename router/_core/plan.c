/* Handshake plans (plan.h): SHA-1, base64, the accept value, the key span of a request head
 * and the table of plans. Written from FIPS 180-4 and RFC 4648 / RFC 6455. */
#define _GNU_SOURCE
#include "plan.h"

#include <stdlib.h>
#include <string.h>

/* ---- SHA-1 ---------------------------------------------------------------------------------- */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t st[5], const uint8_t *b) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
               (uint32_t)b[4 * i + 2] << 8 | (uint32_t)b[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = st[0], bb = st[1], c = st[2], d = st[3], e = st[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (bb & c) | (~bb & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = bb ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (bb & c) | (bb & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = bb ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(bb, 30);
        bb = a;
        a = t;
    }
    st[0] += a;
    st[1] += bb;
    st[2] += c;
    st[3] += d;
    st[4] += e;
}

void hp_sha1(const uint8_t *p, size_t n, uint8_t out[20]) {
    uint32_t st[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        sha1_block(st, p + i);
    uint8_t last[128];
    size_t rest = n - i;
    memcpy(last, p + i, rest);
    last[rest] = 0x80;
    size_t total = rest + 1 + 8 <= 64 ? 64 : 128;
    memset(last + rest + 1, 0, total - rest - 1);
    uint64_t bits = (uint64_t)n * 8;
    for (int k = 0; k < 8; k++)
        last[total - 1 - k] = (uint8_t)(bits >> (8 * k));
    sha1_block(st, last);
    if (total == 128)
        sha1_block(st, last + 64);
    for (int k = 0; k < 5; k++) {
        out[4 * k] = (uint8_t)(st[k] >> 24);
        out[4 * k + 1] = (uint8_t)(st[k] >> 16);
        out[4 * k + 2] = (uint8_t)(st[k] >> 8);
        out[4 * k + 3] = (uint8_t)st[k];
    }
}

/* ---- base64, accept, hex -------------------------------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t hp_base64(const uint8_t *p, size_t n, char *out) {
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = '=';
    }
    return o;
}

static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void hp_accept(const uint8_t *k, size_t n, char out[HP_ACCEPT_LEN]) {
    uint8_t buf[256];
    uint8_t digest[20];
    size_t g = sizeof GUID - 1;
    if (n > sizeof buf - g)
        n = sizeof buf - g; /* (callers pass 24) */
    memcpy(buf, k, n);
    memcpy(buf + n, GUID, g);
    hp_sha1(buf, n + g, digest);
    hp_base64(digest, 20, out);
}

void hp_hex16(const uint8_t in[16], char out[HP_RID_LEN]) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
}

/* ---- the key span of a request head --------------------------------------------------------- */

static int is_b64(uint8_t ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

int hp_ieq(const uint8_t *p, size_t n, const char *lit) {
    if (n != strlen(lit))
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = p[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (uint8_t)(ch + 32);
        if (ch != (uint8_t)lit[i])
            return 0;
    }
    return 1;
}

int hp_key_span(const uint8_t *h, size_t n, size_t *vs, size_t *ve, size_t *key) {
    if (n < 4 || memcmp(h + n - 4, "\r\n\r\n", 4) != 0)
        return 0;
    const uint8_t *first = memmem(h, n, "\r\n", 2);
    if (!first)
        return 0;
    size_t at = (size_t)(first - h) + 2, end = n - 2; /* end: the empty line */
    int found = 0;
    while (at < end) {
        const uint8_t *eol = memmem(h + at, n - at, "\r\n", 2);
        if (!eol)
            return 0;
        size_t le = (size_t)(eol - h);
        if (h[at] == ' ' || h[at] == '\t')
            return 0; /* a folded line: leave such heads to Python */
        const uint8_t *colon = memchr(h + at, ':', le - at);
        if (colon && hp_ieq(h + at, (size_t)(colon - h) - at, "sec-websocket-key")) {
            if (found++)
                return 0;
            size_t a = (size_t)(colon - h) + 1, b = le;
            *vs = a;
            *ve = b;
            while (a < b && (h[a] == ' ' || h[a] == '\t'))
                a++;
            while (b > a && (h[b - 1] == ' ' || h[b - 1] == '\t'))
                b--;
            if (b - a != HP_KEY_LEN || h[a + 22] != '=' || h[a + 23] != '=')
                return 0;
            for (size_t i = a; i < a + 22; i++)
                if (!is_b64(h[i]))
                    return 0;
            *key = a;
        }
        at = le + 2;
    }
    return found == 1;
}

/* ---- the table ------------------------------------------------------------------------------ */

static uint64_t fnv(uint64_t x, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        x ^= b[i];
        x *= 0x100000001b3ULL;
    }
    return x;
}

uint64_t hp_hash(const uint8_t *h, size_t n, size_t vs, size_t ve, const char *peer) {
    uint64_t x = 0xcbf29ce484222325ULL;
    x = fnv(x, h, vs);
    x = fnv(x, h + ve, n - ve);
    x = fnv(x, peer, strlen(peer) + 1);
    return fnv(x, &n, sizeof n);
}

static int same(const hp_plan *p, const uint8_t *h, size_t n, size_t vs, size_t ve,
                const char *peer) {
    return p->head_len == n && p->vs == vs && p->ve == ve && memcmp(p->head, h, vs) == 0 &&
           memcmp(p->head + ve, h + ve, n - ve) == 0 && strcmp(p->peer, peer) == 0;
}

hp_plan *hp_find(const hp_table *t, const uint8_t *h, size_t n, size_t vs, size_t ve,
                 const char *peer, double now) {
    if (!t->count)
        return NULL;
    uint64_t x = hp_hash(h, n, vs, ve, peer);
    for (hp_plan *p = t->slots[x & (t->nslots - 1)]; p; p = p->next)
        if (p->hash == x && p->expires > now && same(p, h, n, vs, ve, peer))
            return p;
    return NULL;
}

static int grow(hp_table *t) {
    size_t n = t->nslots ? t->nslots * 2 : 64;
    hp_plan **slots = calloc(n, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < t->nslots; i++) {
        hp_plan *p = t->slots[i];
        while (p) {
            hp_plan *next = p->next;
            p->next = slots[p->hash & (n - 1)];
            slots[p->hash & (n - 1)] = p;
            p = next;
        }
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = n;
    return 0;
}

hp_plan *hp_insert(hp_table *t, hp_plan *p, int *err) {
    *err = 0;
    if (t->count + 1 > t->nslots && grow(t) < 0) {
        *err = -1;
        return NULL;
    }
    hp_plan *old = NULL;
    for (hp_plan *q = t->slots[p->hash & (t->nslots - 1)]; q; q = q->next)
        if (q->hash == p->hash && same(q, p->head, p->head_len, p->vs, p->ve, p->peer)) {
            old = q;
            break;
        }
    if (old)
        hp_remove(t, old);
    hp_plan **at = &t->slots[p->hash & (t->nslots - 1)];
    p->next = *at;
    *at = p;
    p->dead = 0;
    t->count++;
    return old;
}

int hp_remove(hp_table *t, hp_plan *p) {
    if (!t->nslots || p->dead)
        return 0;
    for (hp_plan **at = &t->slots[p->hash & (t->nslots - 1)]; *at; at = &(*at)->next)
        if (*at == p) {
            *at = p->next;
            p->next = NULL;
            p->dead = 1;
            t->count--;
            return 1;
        }
    return 0;
}

hp_plan *hp_by_id(const hp_table *t, uint64_t id) {
    for (size_t i = 0; i < t->nslots; i++)
        for (hp_plan *p = t->slots[i]; p; p = p->next)
            if (p->id == id)
                return p;
    return NULL;
}

void hp_free(hp_plan *p) {
    if (!p)
        return;
    for (int i = 0; i < p->nq; i++)
        free(p->q[i].key);
    free(p->head);
    free(p->req);
    free(p->ans);
    free(p);
}
