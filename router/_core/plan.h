/* Handshake plans: what the core needs to repeat a handshake Python decided, without Python.
 *
 * A plan is keyed by the exact bytes of a request head with the value of its one
 * Sec-WebSocket-Key header left out, and the client's address: a new head equal to it but for
 * the key is the same request (router/server.py CoreHandshakes decided it), so the core may
 * answer it the same way with a fresh backend key, request id and accept values. Pure code:
 * no socket, no Python (core.c owns the table and calls these under its lock).
 */
#ifndef WSGATE_PLAN_H
#define WSGATE_PLAN_H

#include <stddef.h>
#include <stdint.h>

#define HP_KEY_LEN 24    /* base64 of 16 bytes */
#define HP_ACCEPT_LEN 28 /* base64 of a SHA-1 */
#define HP_RID_LEN 32    /* hex of 16 bytes (wsgate_common.request_ids.new_request_id) */
#define HP_MAX_QUOTAS 8
#define HP_PEER_LEN 46 /* INET6_ADDRSTRLEN */

/* SHA-1 (FIPS 180-4) of p[0:n]. */
void hp_sha1(const uint8_t *p, size_t n, uint8_t out[20]);
/* Standard base64 (with padding) of p[0:n] into out (4 * ceil(n / 3) chars, no NUL); returns
 * the length written. */
size_t hp_base64(const uint8_t *p, size_t n, char *out);
/* Sec-WebSocket-Accept for the key k[0:n] (RFC 6455 4.2.2): base64(SHA-1(key + GUID)). */
void hp_accept(const uint8_t *k, size_t n, char out[HP_ACCEPT_LEN]);
/* p[0:n] equals the lower-case ASCII lit, ignoring ASCII case (header names). */
int hp_ieq(const uint8_t *p, size_t n, const char *lit);
/* Hex of 16 bytes (32 lower-case digits). */
void hp_hex16(const uint8_t in[16], char out[HP_RID_LEN]);

/* In the request head h[0:n] (ending with its first CRLF CRLF): the raw value of its only
 * Sec-WebSocket-Key header, h[*vs:*ve] (after the colon, up to the CRLF), and where the key
 * itself starts (*key: 22 base64 digits and "==", only spaces or tabs around it, as
 * http11.validate_upgrade accepts it). 0 when the head has no such header, more than one, a
 * folded line, or a key Python would refuse: no plan serves it. */
int hp_key_span(const uint8_t *h, size_t n, size_t *vs, size_t *ve, size_t *key);

typedef struct hp_quota {
    char *key;
    int64_t limit;
    double window;
    uint8_t stop;
} hp_quota;

typedef struct hp_plan {
    uint64_t id;
    uint64_t hash;
    uint32_t refs; /* the table's + each handshake using it + each report naming it */
    int dead;      /* out of the table */
    struct hp_plan *next, *next_dead;
    void *ctx; /* Python's object for the plan (core.c releases it with the GIL) */
    char peer[HP_PEER_LEN];
    uint8_t *head; /* the head it was made from; head[vs:ve] is not compared */
    size_t head_len, vs, ve;
    uint8_t *req; /* the backend request; the key at req_key, the request id at req_rid */
    size_t req_len, req_key, req_rid;
    uint8_t *ans; /* the client's 101; its accept at ans_accept */
    size_t ans_len, ans_accept;
    unsigned char sa[128]; /* struct sockaddr_storage of the backend */
    uint32_t salen;
    double connect_timeout;
    double expires; /* CLOCK_MONOTONIC seconds */
    unsigned long long max_message;
    int nq;
    hp_quota q[HP_MAX_QUOTAS];
} hp_plan;

typedef struct hp_table {
    hp_plan **slots;
    size_t nslots, count;
} hp_table;

uint64_t hp_hash(const uint8_t *h, size_t n, size_t vs, size_t ve, const char *peer);
/* The live plan whose head equals h[0:n] but for h[vs:ve] (of the same length), from peer,
 * not expired at now; NULL when none. */
hp_plan *hp_find(const hp_table *t, const uint8_t *h, size_t n, size_t vs, size_t ve,
                 const char *peer, double now);
/* Put p in the table (p->hash set); returns the plan it replaces (same head and peer: taken
 * out, marked dead, its table reference still to drop by the caller), or NULL. -1 in *err on
 * no memory. */
hp_plan *hp_insert(hp_table *t, hp_plan *p, int *err);
/* Take p out of the table (marks it dead); 1 when it was there. */
int hp_remove(hp_table *t, hp_plan *p);
hp_plan *hp_by_id(const hp_table *t, uint64_t id);
/* Free a plan's memory (not its ctx). */
void hp_free(hp_plan *p);

#endif
