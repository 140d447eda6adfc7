/* The relay core: established plaintext WebSocket connections relayed on one epoll thread.
 *
 * Python does the handshake, then hands both sockets (dup'ed fds), the early bytes already read
 * from each side and the 101 still to send to the client to Core.add(). From then on this
 * thread reads into one shared buffer, scans the frames (scan.c, with the quota gate of
 * quota.c), and send()s the kept bytes straight to the peer; only what the peer's socket does
 * not take is copied into a per-direction pending buffer (allocated on demand, freed when
 * drained), and while it exists the source is not read (backpressure). The same is done for a
 * message a leased quota's pool has nothing for while the window is not known to be exhausted
 * (hold: the side's unscanned bytes are kept, the side is not read until the pool changes).
 *
 * The closing logic is router/relay.py's Relay (terminate, close_client, side_lost,
 * stream_error, shutdown, abort), statement by statement; uvloop's transport semantics are
 * mirrored by closing(): "close after flushing, abort after CLOSE_GRACE", and by running the
 * consequences of a socket ending (side_lost) after the operation that ended it, like
 * connection_lost is called soon, not inside write().
 *
 * Locking: one mutex per Core. The relay thread holds it while it handles a batch of epoll
 * events; Python's calls (add, terminate, shutdown, snapshot, ...) take it and act directly
 * (then wake the thread when a deadline changed). The relay thread never touches a Python
 * object nor the GIL. Events for Python (closed, throttled, stream error, abort) queue under the
 * mutex and an eventfd tells the asyncio loop (loop.add_reader(core.fileno(), ...)).
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "plan.h"
#include "quota.h"
#include "scan.h"

#define READ_SIZE (64 * 1024)
#define CLOSE_GRACE 1.0
#define MAX_QUOTAS 8
#define MAX_EVENTS 256
/* A held message waits this long at most: then what the side had read is decided without
 * holding (refused if the pool still has nothing), as without the hold. Long enough for a
 * stalled event loop; short enough that traffic over a quota is throttled, not queued. */
#define HOLD_MAX 1.0

enum mode { RELAY, DISCARD, FINISH }; /* _Side, _Detached, _FinishFrame */
enum by { BY_NONE, BY_CLIENT, BY_BACKEND, BY_ROUTER };
static const char *BY_NAMES[] = {"", "client", "backend", "router"};
enum ev {
    EV_CLOSED,
    EV_THROTTLED,
    EV_ERROR,
    EV_ABORT,
    EV_LEASE,
    EV_HEAD,
    EV_UPSTREAM,
    EV_HS_END,
    EV_STARTED,
    EV_PLANNED
};
enum planned { PLANNED_STARTED, PLANNED_UPSTREAM, PLANNED_GONE }; /* EV_PLANNED's outcome */
enum tag { TAG_SIDE, TAG_HS_CLIENT, TAG_HS_BACKEND, TAG_LISTEN };
typedef struct hs hs;

typedef struct conn conn;
typedef struct side {
    int kind; /* TAG_SIDE: what an epoll event's data.ptr points at (see hs.c's tags) */
    conn *c;
    struct side *peer;
    int fd;
    int is_client;
    int mode;
    int closing, lost, doomed; /* doomed: queued to become lost (like connection_lost soon) */
    int lingering;             /* flushed and FIN sent: waiting for the peer's FIN */
    uint32_t events;           /* registered with epoll (EPOLLET, see update_events) */
    int eof_seen;              /* EPOLLRDHUP/HUP/ERR reported: read on until EOF or error */
    int again;                 /* queued on core->again: to be read again after this batch */
    double deadline;           /* closing with output pending: abort then; 0 none */
    ws_scan scan;              /* what this side sends */
    uint8_t *pend;             /* output to this side the socket did not take yet */
    size_t pend_len, pend_off;
    /* Input held back (a leased quota's pool ran dry, Python has not said the window is
     * exhausted): the bytes read from this side from the held message on, not scanned yet,
     * at hold + WS_HEADROOM (at most one read). The side is not read while they wait; they are
     * fed again when hold_q's pool changes (its gen moves) or at hold_until (a slot's permits
     * become usable then). */
    uint8_t *hold;
    size_t hold_len;
    wq_counter *hold_q;
    uint64_t hold_gen;
    double hold_until;
    double hold_since; /* when those bytes were read (held first): HOLD_MAX from then */
    struct side *next_doomed;
    struct side *next_again;
} side;

struct conn {
    uint64_t id;
    uint32_t slot;
    side cl, be;
    int terminating, stop_pending, tell_backend, finished;
    int closed_by;
    int router_code; /* -1: none */
    uint8_t router_reason[124];
    int router_reason_len;
    uint8_t backend_reason[124];
    int backend_reason_len;
    double grace; /* the frame in flight to the client must end by then, 0 none */
    int nq, stop_quota, first_drop; /* first_drop: 0 none yet, i+1 to report, -1 reported */
    wq_counter *held_by;            /* conn_admit's last WS_HOLD: the counter without room */
    int no_hold;                    /* feeding bytes held HOLD_MAX already: refuse, not hold */
    uint64_t act_window;            /* the activity window it last read in (sched auto) */
    wq_counter *q[MAX_QUOTAS];
    uint8_t stop[MAX_QUOTAS];
    conn *next_dead;
};

typedef struct event {
    int kind;
    uint64_t id;
    int a, b;       /* closed: router_code, closed_by; throttled: quota; error: is_client, code */
    int terminating;
    int close_seen[2], close_code[2];
    uint64_t close_seq[2];
    uint64_t counts[7];
    char text[100];
    uint8_t *data; /* EV_HEAD, EV_UPSTREAM: bytes for Python (owned, freed by events()) */
    size_t len;
    uint64_t relay; /* EV_STARTED: the relay's id */
    /* EV_PLANNED: a handshake the core did by a plan (a: outcome; err/code as EV_UPSTREAM's;
     * the plan's reference moves here from the handshake, dropped by events()) */
    hp_plan *plan;
    int err, code;
    char rid[HP_RID_LEN], bkey[HP_KEY_LEN], ckey[HP_KEY_LEN];
    double started;
    int nq;
    wq_counter *q[MAX_QUOTAS];
} event;

typedef struct {
    PyObject_HEAD pthread_mutex_t lock;
    pthread_t thread;
    int started, stopping;
    /* Scheduling policy of the relay thread (see start_thread): SCHED_MODE_*; in auto mode,
     * the connections read during the current window (act_window), counted once each via
     * conn.act_window, decide at the window's end. */
    int sched_mode, sched_batch;
    uint64_t act_window, act_count;
    double act_start;
    int epfd, wakefd, evfd;
    conn **slots;
    uint32_t nslots, nlive;
    uint32_t *free_slots;
    uint32_t nfree;
    uint64_t next_id;
    side *doomed;
    side *again; /* sides whose last read may have left bytes (or the EOF) unread */
    conn *dead;
    event *events;
    size_t nevents, capevents;
    wq_table quotas;
    uint8_t *rbuf; /* the one read buffer, WS_HEADROOM + READ_SIZE */
    uint64_t closed_total;
    double next_deadline; /* earliest grace/close deadline set (maybe cancelled since); 0 none */
    /* the plaintext listener and the handshakes before their relay starts (hs.c) */
    int listen_tag; /* TAG_LISTEN: data.ptr of the listener's epoll event */
    int lfd;
    size_t max_head;
    double head_timeout;
    hs **hslots;
    uint32_t nhslots, nhlive;
    uint32_t *hfree;
    uint32_t nhfree;
    uint64_t accepted, handed_back, fast_started, self_started;
    hs *hdead;
    hs *hpending; /* connects asked by Python, in the relay thread's next turn */
    double listen_resume; /* out of fds: accepting pauses until then (0: not paused) */
    /* handshake plans (plan.h): a head equal to a plan's but for its key is done by the core
     * alone while plan_started < plan_allow: Python sets the allowance (lock-free) from the
     * router's connection limit, counting what the core started that it has not seen yet */
    hp_table plans;
    hp_plan *plan_dead; /* no reference left: freed with the GIL (plan_collect) */
    uint64_t next_plan, planned;
    _Atomic unsigned long long plan_started; /* written by the relay thread only */
    _Atomic unsigned long long plan_allow;
    uint8_t rnd[4096];
    size_t rnd_left;
    uint32_t nheld;       /* sides holding input back (side.hold) */
    int retry_held;       /* a leased pool changed (Python): try the held sides again */
    uint64_t holds;       /* times a side was held, ever */
} CoreObject;

static void set_deadline(CoreObject *core, double *at, double when) {
    *at = when;
    if (!core->next_deadline || when < core->next_deadline)
        core->next_deadline = when;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- events to Python ---------------------------------------------------------------------- */

static event *push_event_id(CoreObject *core, int kind, uint64_t id) {
    if (core->nevents == core->capevents) {
        size_t cap = core->capevents ? core->capevents * 2 : 64;
        event *evs = realloc(core->events, cap * sizeof *evs);
        if (!evs)
            return NULL; /* lost a log line; the close event is retried by the caller */
        core->events = evs;
        core->capevents = cap;
    }
    event *e = &core->events[core->nevents++];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->id = id;
    if (core->nevents == 1) {
        uint64_t one = 1;
        ssize_t r = write(core->evfd, &one, sizeof one);
        (void)r;
    }
    return e;
}

static double hs_next_deadline(CoreObject *core, double next);
static void close_listener(CoreObject *self);
static void hs_run_pending(CoreObject *core);

static event *push_event(CoreObject *core, int kind, conn *c) {
    return push_event_id(core, kind, c->id);
}

/* ---- sockets ------------------------------------------------------------------------------- */

/* A relayed socket's epoll registration: edge-triggered, as nginx registers its sockets, so a
 * readable socket is reported once per arrival and not again at every epoll_wait until a read
 * finds it empty (level-triggered epoll polls every reported socket once more at the next wait,
 * a tcp_poll per event). What an edge may leave unread is read again after the batch
 * (read_again): the rest of a read that filled the buffer, and the EOF behind the data when
 * EPOLLRDHUP said the peer has shut down. Turning EPOLLIN back on (EPOLL_CTL_MOD) makes epoll
 * poll the socket at once, so bytes that arrived while it was off are reported then. */
static uint32_t registration(uint32_t want) {
    return want | EPOLLET | ((want & EPOLLIN) ? EPOLLRDHUP : 0);
}

static void update_events(CoreObject *core, side *s) {
    if (s->lost || s->fd < 0)
        return;
    uint32_t want = 0;
    if (s->lingering && !s->doomed)
        want |= EPOLLIN;
    else if (!s->closing && !s->doomed && !s->hold_len && (s->peer->lost || !s->peer->pend_len))
        want |= EPOLLIN;
    if (s->pend_len)
        want |= EPOLLOUT;
    want = registration(want);
    if (want != s->events) {
        struct epoll_event ev = {.events = want, .data.ptr = s};
        epoll_ctl(core->epfd, EPOLL_CTL_MOD, s->fd, &ev);
        s->events = want;
    }
}

/* Forget a side's held input (the side is closing, discarding or gone), read it again. */
static void drop_held(CoreObject *core, side *s) {
    if (!s->hold)
        return;
    free(s->hold);
    s->hold = NULL;
    s->hold_len = 0;
    s->hold_q = NULL;
    s->hold_until = 0;
    s->hold_since = 0;
    core->nheld--;
    update_events(core, s);
}

/* connection_lost, soon: the side's socket ends after the current operation. */
static void doom(CoreObject *core, side *s) {
    if (s->lost || s->doomed)
        return;
    s->doomed = 1;
    s->closing = 1;
    s->next_doomed = core->doomed;
    core->doomed = s;
    update_events(core, s);
}

/* All output is out: send our FIN and wait (at most CLOSE_GRACE) for the peer's before closing
 * the socket. Closing with the peer still sending would answer it with an RST, which can make
 * its TCP stack drop our close frame unread (uvloop closes at once; the core is fast enough to
 * hit that race where the Python relay did not). */
static void linger(CoreObject *core, side *s) {
    if (s->lingering || s->lost || s->doomed)
        return;
    if (shutdown(s->fd, SHUT_WR) < 0) {
        doom(core, s);
        return;
    }
    s->lingering = 1;
    set_deadline(core, &s->deadline, mono() + CLOSE_GRACE);
    update_events(core, s);
}

/* transport.close(): flush, then end; abort after CLOSE_GRACE if the flush does not finish. */
static void closing(CoreObject *core, side *s) {
    if (s->closing || s->lost)
        return;
    s->closing = 1;
    drop_held(core, s); /* a closed transport delivers nothing more */
    if (!s->pend_len) {
        linger(core, s);
        return;
    }
    set_deadline(core, &s->deadline, mono() + CLOSE_GRACE);
    update_events(core, s);
}

/* transport.write(): send now what the socket takes, keep the rest. */
static void put(CoreObject *core, side *to, const uint8_t *p, size_t n) {
    if (!n || to->lost || to->doomed || to->lingering) /* lingering: our FIN is already out */
        return;
    if (!to->pend_len) {
        ssize_t r = send(to->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                doom(core, to); /* a fatal write error: the transport is aborted */
                return;
            }
            r = 0;
        }
        if ((size_t)r == n)
            return;
        p += r;
        n -= (size_t)r;
        to->pend = malloc(n);
        if (!to->pend) {
            doom(core, to);
            return;
        }
        memcpy(to->pend, p, n);
        to->pend_len = n;
        to->pend_off = 0;
        update_events(core, to);
        update_events(core, to->peer);
        return;
    }
    size_t have = to->pend_len - to->pend_off;
    uint8_t *buf = malloc(have + n);
    if (!buf) {
        doom(core, to);
        return;
    }
    memcpy(buf, to->pend + to->pend_off, have);
    memcpy(buf + have, p, n);
    free(to->pend);
    to->pend = buf;
    to->pend_len = have + n;
    to->pend_off = 0;
}

static void flush(CoreObject *core, side *s) {
    while (s->pend_len) {
        ssize_t r = send(s->fd, s->pend + s->pend_off, s->pend_len - s->pend_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                doom(core, s);
            return;
        }
        s->pend_off += (size_t)r;
        if (s->pend_off == s->pend_len) {
            free(s->pend);
            s->pend = NULL;
            s->pend_len = s->pend_off = 0;
        }
    }
    s->deadline = 0;
    update_events(core, s);
    update_events(core, s->peer);
    if (s->closing)
        linger(core, s);
}

static void close_frame(CoreObject *core, side *to, int code, const uint8_t *reason, int rlen,
                        int mask) {
    uint8_t f[2 + 4 + 125];
    int n = 0;
    if (rlen > 123)
        rlen = 123;
    f[n++] = 0x88;
    f[n++] = (uint8_t)((mask ? 0x80 : 0) | (2 + rlen));
    uint8_t key[4] = {0, 0, 0, 0};
    if (mask) {
        if (getrandom(key, 4, GRND_NONBLOCK) != 4) {
            uint64_t t = (uint64_t)(mono() * 1e9);
            memcpy(key, &t, 4);
        }
        memcpy(f + n, key, 4);
        n += 4;
    }
    uint8_t payload[125];
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    memcpy(payload + 2, reason, (size_t)rlen);
    for (int i = 0; i < 2 + rlen; i++)
        f[n + i] = payload[i] ^ key[i & 3];
    put(core, to, f, (size_t)(n + 2 + rlen));
}

/* ---- Relay's closing logic ------------------------------------------------------------------ */

static void finish(CoreObject *core, conn *c) {
    if (c->finished)
        return;
    c->finished = 1;
    event *e = push_event(core, EV_CLOSED, c);
    if (e) {
        e->a = c->router_code;
        e->b = c->closed_by;
        e->terminating = c->terminating;
        side *sides[2] = {&c->cl, &c->be};
        for (int i = 0; i < 2; i++) {
            e->close_seen[i] = sides[i]->scan.close_seen;
            e->close_seq[i] = sides[i]->scan.close_seq;
            e->close_code[i] = sides[i]->scan.close_code;
        }
        ws_scan *up = &c->cl.scan, *down = &c->be.scan;
        uint64_t counts[7] = {up->frames,  down->frames, up->messages,
                              down->messages, up->bytes, down->bytes,
                              up->dropped + down->dropped};
        memcpy(e->counts, counts, sizeof counts);
    }
    core->slots[c->slot] = NULL;
    core->free_slots[core->nfree++] = c->slot;
    core->nlive--;
    core->closed_total++;
    c->next_dead = core->dead;
    core->dead = c;
}

static void close_client(CoreObject *core, conn *c) {
    side *cl = &c->cl, *be = &c->be;
    c->grace = 0;
    if (!be->lost) {
        be->mode = DISCARD;
        drop_held(core, be);
    }
    int code = c->router_code >= 0 ? c->router_code : 1008;
    if (!cl->lost && !cl->closing && !be->scan.close_seen)
        close_frame(core, cl, code, c->router_reason, c->router_reason_len, 0);
    if (c->tell_backend && !be->lost && !be->closing)
        close_frame(core, be, 1001, c->backend_reason, c->backend_reason_len, 1);
    if (!cl->lost)
        closing(core, cl);
    if (!be->lost)
        closing(core, be);
}

static int terminate(CoreObject *core, conn *c, int code, const uint8_t *reason, int rlen,
                     const uint8_t *breason, int brlen) {
    side *cl = &c->cl, *be = &c->be;
    if (c->terminating || (cl->lost && be->lost) || c->finished)
        return 0;
    c->terminating = 1;
    if (c->closed_by == BY_NONE)
        c->closed_by = BY_ROUTER;
    c->router_code = code;
    c->router_reason_len = rlen > 123 ? 123 : rlen;
    memcpy(c->router_reason, reason, (size_t)c->router_reason_len);
    if (brlen) {
        c->backend_reason_len = brlen > 123 ? 123 : brlen;
        memcpy(c->backend_reason, breason, (size_t)c->backend_reason_len);
    }
    if (!cl->lost) {
        cl->mode = DISCARD;
        drop_held(core, cl);
    }
    c->tell_backend = ws_scan_out_at_boundary(&cl->scan) && !cl->scan.close_seen;
    if (be->lost || be->closing || ws_scan_out_at_boundary(&be->scan)) {
        close_client(core, c);
    } else {
        be->mode = FINISH;
        set_deadline(core, &c->grace, mono() + CLOSE_GRACE);
    }
    return 1;
}

static void abort_conn(CoreObject *core, conn *c, const char *why) {
    c->grace = 0;
    event *e = push_event(core, EV_ABORT, c);
    if (e)
        snprintf(e->text, sizeof e->text, "%s", why);
    side *sides[2] = {&c->cl, &c->be};
    for (int i = 0; i < 2; i++)
        if (!sides[i]->lost) {
            free(sides[i]->pend);
            sides[i]->pend = NULL;
            sides[i]->pend_len = sides[i]->pend_off = 0;
            doom(core, sides[i]);
        }
}

static void side_lost(CoreObject *core, side *s) {
    conn *c = s->c;
    side *peer = s->peer;
    if (peer->lost) {
        finish(core, c);
        return;
    }
    if (c->closed_by == BY_NONE)
        c->closed_by = s->is_client ? BY_CLIENT : BY_BACKEND;
    if (!s->is_client && !s->scan.close_seen && ws_scan_out_at_boundary(&s->scan) &&
        !peer->closing) {
        static const char why[] = "backend connection closed unexpectedly";
        c->router_code = 1011;
        close_frame(core, peer, 1011, (const uint8_t *)why, (int)sizeof why - 1, 0);
    }
    closing(core, peer);
}

static void stream_error(CoreObject *core, side *s) {
    conn *c = s->c;
    side *peer = s->peer;
    int code = s->scan.err_code;
    c->closed_by = s->is_client ? BY_CLIENT : BY_BACKEND;
    c->router_code = code;
    event *e = push_event(core, EV_ERROR, c);
    if (e) {
        e->a = s->is_client;
        e->b = code;
        snprintf(e->text, sizeof e->text, "%s", s->scan.err_msg);
    }
    int to_side_ok = ws_scan_out_at_boundary(&peer->scan);
    int to_peer_ok = s->scan.err_offset >= 0 || s->scan.fed_at_boundary;
    int peer_code = s->is_client ? code : 1011;
    const uint8_t *reason = (const uint8_t *)s->scan.err_msg;
    int rlen = (int)strlen(s->scan.err_msg);
    if (rlen > 100)
        rlen = 100;
    if (to_side_ok && !s->closing)
        close_frame(core, s, code, reason, rlen, !s->is_client);
    if (to_peer_ok && !peer->closing)
        close_frame(core, peer, peer_code, reason, rlen, s->is_client);
    closing(core, s);
    closing(core, peer);
}

static void shutdown_conn(CoreObject *core, conn *c, int code, const uint8_t *reason, int rlen) {
    if (c->finished)
        return;
    if (c->closed_by == BY_NONE)
        c->closed_by = BY_ROUTER;
    if (c->router_code <= 0)
        c->router_code = code;
    side *sides[2] = {&c->cl, &c->be};
    int close_it[2] = {0, 0};
    for (int i = 0; i < 2; i++) { /* the frames first: closing one side may end the other */
        side *s = sides[i];
        if (s->lost || s->closing)
            continue;
        if (ws_scan_out_at_boundary(&s->peer->scan) && !s->peer->scan.close_seen)
            close_frame(core, s, code, reason, rlen, !s->is_client);
        close_it[i] = 1;
    }
    for (int i = 0; i < 2; i++)
        if (close_it[i])
            closing(core, sides[i]);
}

/* The sockets that ended during an operation: close them and run side_lost, like
 * connection_lost callbacks running after the callback that caused them. */
static void settle(CoreObject *core) {
    while (core->doomed) {
        side *s = core->doomed;
        core->doomed = s->next_doomed;
        s->next_doomed = NULL;
        if (s->lost)
            continue;
        s->lost = 1;
        s->deadline = 0;
        epoll_ctl(core->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
        s->fd = -1;
        free(s->pend);
        s->pend = NULL;
        s->pend_len = s->pend_off = 0;
        drop_held(core, s);
        update_events(core, s->peer);
        side_lost(core, s);
    }
}

static void free_dead(CoreObject *core) {
    while (core->dead) {
        conn *c = core->dead;
        core->dead = c->next_dead;
        for (int i = 0; i < c->nq; i++)
            wq_counter_unref(c->q[i]); /* Python releases the keys (CounterTable refs) */
        free(c->cl.pend);
        free(c->be.pend);
        free(c->cl.hold); /* (only when the core stops: else dropped as the side ended) */
        free(c->be.hold);
        free(c);
    }
}

/* ---- the data path ---------------------------------------------------------------------- */

static int conn_admit(void *ctx, int opcode) {
    conn *c = ctx;
    if (c->stop_pending || c->terminating || !c->nq)
        return 0;
    int i = c->no_hold ? wq_admit(c->q, c->nq, mono()) : wq_decide(c->q, c->nq, mono());
    if (i == -1)
        return 1;
    if (i <= WQ_HELD(0)) { /* a leased pool is dry, the window is not: wait for permits */
        c->held_by = c->q[WQ_HELD(0) - i];
        return WS_HOLD;
    }
    if (c->stop[i]) {
        c->stop_pending = 1;
        c->stop_quota = i;
    } else if (!(c->cl.scan.dropped + c->be.scan.dropped) && !c->first_drop) {
        c->first_drop = i + 1; /* reported once, for the "throttling ..." log line */
    }
    return 0;
}

/* Leased counters (Redis mode) whose permits run low or ran out: told to Python once per
 * read at most, and once per counter until Python tops it up (wq_lease_put). */
static void report_leases(CoreObject *core, conn *c) {
    for (int k = 0; k < c->nq; k++) {
        wq_counter *q = c->q[k];
        if (q->want && !q->reported) {
            q->reported = 1;
            if (!push_event_id(core, EV_LEASE, (uint64_t)(uintptr_t)q))
                q->reported = 0;
        }
    }
}

/* The scan stopped at a held message: keep p[0:n] (not scanned yet) and stop reading the side
 * until the pool that had no room changes (backpressure: nothing dropped, nothing reordered).
 * 0 when the connection was aborted (no memory). */
static int hold(CoreObject *core, side *s, const uint8_t *p, size_t n) {
    uint8_t *buf = malloc(WS_HEADROOM + (n ? n : 1));
    if (!buf) {
        abort_conn(core, s->c, "no memory to hold a message");
        return 0;
    }
    memcpy(buf + WS_HEADROOM, p, n);
    if (!s->hold)
        core->nheld++;
    free(s->hold);
    s->hold = buf;
    s->hold_len = n;
    s->hold_q = s->c->held_by;
    s->hold_gen = s->hold_q->gen;
    core->holds++;
    double now = mono();
    if (!s->hold_since) /* (fed again still held: they were read when first held) */
        s->hold_since = now;
    double next = wq_lease_next_start(s->hold_q, now), end = s->hold_since + HOLD_MAX;
    s->hold_until = 0;
    set_deadline(core, &s->hold_until, next && next < end ? next : end);
    update_events(core, s);
    return 1;
}

static void received(CoreObject *core, side *s, uint8_t *data, size_t n);

/* Feed a side's held input again (its pool changed, or a slot's permits became usable); what
 * is still held (the pool is dry again) stays, and the side is read again once none is. Held
 * HOLD_MAX already: decided without holding (what has no permit is refused). */
static void retry_held(CoreObject *core, side *s, double now) {
    uint8_t *buf = s->hold;
    size_t n = s->hold_len;
    int expired = now >= s->hold_since + HOLD_MAX;
    s->hold = NULL;
    s->hold_len = 0;
    s->hold_q = NULL;
    s->hold_until = 0;
    core->nheld--;
    if (!s->lost && !s->doomed && !s->closing && s->mode != DISCARD) {
        s->c->no_hold = expired;
        received(core, s, buf + WS_HEADROOM, n);
        s->c->no_hold = 0;
    }
    if (!s->hold)
        s->hold_since = 0;
    free(buf);
    update_events(core, s);
}

/* The held sides whose pool changed since they were held (or whose hold_until is due). */
static void resume_held(CoreObject *core, double now) {
    core->retry_held = 0;
    for (uint32_t i = 0; i < core->nslots && core->nheld; i++) {
        conn *c = core->slots[i];
        if (!c)
            continue;
        side *sides[2] = {&c->cl, &c->be};
        for (int k = 0; k < 2 && !c->finished; k++) {
            side *s = sides[k];
            if (s->hold && (s->hold_q->gen != s->hold_gen ||
                            (s->hold_until && s->hold_until <= now)))
                retry_held(core, s, now);
        }
        settle(core);
    }
}

/* What the side read: data[0:n], with WS_HEADROOM writable bytes before it. */
static void received(CoreObject *core, side *s, uint8_t *data, size_t n) {
    conn *c = s->c;
    if (s->mode == DISCARD)
        return;
    if (s->mode == FINISH) {
        long used = ws_scan_to_boundary(&s->scan, data, n);
        if (used < 0) {
            abort_conn(core, c, "backend stream broke while closing");
            return;
        }
        put(core, s->peer, data, (size_t)used);
        if (ws_scan_out_at_boundary(&s->scan))
            close_client(core, c);
        return;
    }
    size_t w = ws_scan_feed(&s->scan, data, n, data - WS_HEADROOM);
    if (s->scan.held && !hold(core, s, data + s->scan.held_at, n - s->scan.held_at))
        return;
    if (c->nq)
        report_leases(core, c);
    if (c->first_drop > 0) {
        event *e = push_event(core, EV_THROTTLED, c);
        if (e) {
            e->a = c->first_drop - 1;
            e->b = 0;
        }
        c->first_drop = -1;
    }
    put(core, s->peer, data - WS_HEADROOM, w);
    if (s->scan.err_code) {
        stream_error(core, s);
        return;
    }
    if (c->stop_pending) {
        static const char why[] = "message throttled out";
        if (terminate(core, c, 1008, (const uint8_t *)why, (int)sizeof why - 1, NULL, 0)) {
            event *e = push_event(core, EV_THROTTLED, c);
            if (e) {
                e->a = c->stop_quota;
                e->b = 1; /* stopped: the connection is being closed */
            }
        }
    }
}

/* The socket may hold more than the read took: a full buffer's worth may be followed by more,
 * and after a short read the EOF may wait behind the data (eof_seen). Edge-triggered epoll
 * will not report either again, so the side is read again after the current batch, which
 * keeps one read per connection per turn, as level-triggered events gave. */
static void read_again(CoreObject *core, side *s, ssize_t r) {
    if ((r == READ_SIZE || s->eof_seen || r < 0) && !s->again) {
        s->again = 1;
        s->next_again = core->again;
        core->again = s;
    }
}

static void readable(CoreObject *core, side *s) {
    uint8_t *data = core->rbuf + WS_HEADROOM;
    ssize_t r = recv(s->fd, data, READ_SIZE, MSG_DONTWAIT);
    if (r < 0 && errno == EINTR) {
        read_again(core, s, r);
        return;
    }
    if (s->lingering) { /* only the peer's FIN matters now */
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            doom(core, s);
        else if (r > 0)
            read_again(core, s, r);
        return;
    }
    if (r > 0) {
        if (s->c->act_window != core->act_window) {
            s->c->act_window = core->act_window;
            core->act_count++;
        }
        received(core, s, data, (size_t)r);
        read_again(core, s, r);
        return;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (r == 0)
        closing(core, s); /* EOF: the transport closes itself once its output is flushed */
    else
        doom(core, s); /* a read error: the transport is aborted */
}

static void expire(CoreObject *core, double now) {
    for (uint32_t i = 0; i < core->nslots; i++) {
        conn *c = core->slots[i];
        if (!c)
            continue;
        if (c->grace && c->grace <= now) {
            c->grace = 0;
            abort_conn(core, c, "backend frame in flight did not end in time");
        }
        side *sides[2] = {&c->cl, &c->be};
        for (int k = 0; k < 2 && !c->finished; k++)
            if (sides[k]->hold && sides[k]->hold_until && sides[k]->hold_until <= now)
                retry_held(core, sides[k], now); /* a slot's permits usable, or HOLD_MAX */
        for (int k = 0; k < 2; k++)
            if (sides[k]->deadline && sides[k]->deadline <= now && !sides[k]->lost) {
                sides[k]->deadline = 0;
                free(sides[k]->pend);
                sides[k]->pend = NULL;
                sides[k]->pend_len = sides[k]->pend_off = 0;
                doom(core, sides[k]);
            }
        settle(core);
    }
}

static double next_deadline(CoreObject *core) {
    double next = 0;
    for (uint32_t i = 0; i < core->nslots; i++) {
        conn *c = core->slots[i];
        if (!c)
            continue;
        double ds[5] = {c->grace, c->cl.deadline, c->be.deadline, c->cl.hold_until,
                        c->be.hold_until};
        for (int k = 0; k < 5; k++)
            if (ds[k] && (!next || ds[k] < next))
                next = ds[k];
    }
    return hs_next_deadline(core, next);
}


/* ---- handshakes in the core (plaintext listener) ---------------------------------------------
 *
 * With Core.listen() the core accepts the plaintext listener's connections and reads each
 * request head (at most max_head bytes, within head_timeout); a complete (or oversized) head is
 * reported to Python (EV_HEAD), which decides: release() gives the socket back (the asyncio
 * path), reply() sends an answer and closes, connect() opens the backend, sends the upgrade
 * request and reports the backend's response head (EV_UPSTREAM), start() turns both sockets
 * into a relayed connection. The core never decides anything about a request; given what to
 * expect and answer at connect(), it judges only the backend's answer when it is a plain 101
 * (hs_fast_start: relayed at once, EV_STARTED), everything else goes to Python as before. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

enum hs_state { HS_HEAD, HS_WAIT, HS_UPSTREAM, HS_REPLY, HS_DEAD };
#define HS_EARLY_MAX (64 * 1024) /* bytes after the head a client may send before the 101 */
#define HS_RESP_MAX (16 * 1024 + 1)
#define HS_LINGER 1.0
enum up_err { UP_OK, UP_CONNECT, UP_CLOSED, UP_TIMEOUT, UP_TOO_LARGE };

typedef struct hs_end {
    int kind;
    hs *h;
} hs_end;

struct hs {
    uint64_t id;
    uint32_t slot;
    int state;
    int cfd, bfd;
    hs_end ce, be;
    uint32_t cev, bev; /* registered events; creg/breg: registered with epoll at all */
    int creg, breg, connected;
    uint8_t *cbuf; /* what the client sent so far */
    size_t clen;
    size_t head_len; /* given by connect(): cbuf[head_len:] is the client's early data */
    uint8_t *bbuf;   /* what the backend sent so far */
    size_t blen, bhead;
    uint8_t *out; /* to the backend (HS_UPSTREAM) or to the client (HS_REPLY) */
    size_t outlen, outoff;
    double deadline;
    char peer[INET6_ADDRSTRLEN];
    hs *next_dead;
    /* connect() asked by Python, done by the relay thread (no socket calls on the loop) */
    struct sockaddr_storage sa;
    socklen_t salen;
    double connect_timeout;
    hs *next_pending;
    /* Core.connect's fast start (fast: asked): when the backend answers a plain 101 (see
     * plain_101) the core sends `answer` and relays at once, reporting EV_STARTED; anything
     * else is EV_UPSTREAM as without it. fq: the quota counters, held (refs) until then. */
    int fast, fnq;
    uint8_t *expect, *answer;
    size_t expect_len, answer_len;
    unsigned long long max_message;
    wq_counter *fq[MAX_QUOTAS];
    uint8_t fstops[MAX_QUOTAS];
    /* done by a plan: its reference, what the core made up for this handshake, the quota
     * holds taken for Python (reported with the outcome: Python releases them) */
    hp_plan *plan;
    char rid[HP_RID_LEN], bkey[HP_KEY_LEN], ckey[HP_KEY_LEN];
    double started;
    int pnq;
    wq_counter *pq[MAX_QUOTAS];
};

/* Python no longer needs the fast start's parameters: its holds on the counters go. */
static void hs_drop_fast(hs *h) {
    for (int i = 0; i < h->fnq; i++)
        wq_counter_unref(h->fq[i]);
    h->fnq = 0;
    h->fast = 0;
}

static int hs_fast_start(CoreObject *core, hs *h);

/* A reference to a plan goes; the last one queues it for plan_collect (its ctx is a Python
 * object: only freed with the GIL). Under the lock. */
static void plan_unref(CoreObject *core, hp_plan *p) {
    if (p && --p->refs == 0) {
        p->next_dead = core->plan_dead;
        core->plan_dead = p;
    }
}

/* Report the outcome of a planned handshake (moving its plan reference and quota holds to the
 * report); a failure also drops the plan: the next such head goes to Python. */
static event *plan_report(CoreObject *core, hs *h, int outcome) {
    hp_plan *p = h->plan;
    if (outcome != PLANNED_STARTED && hp_remove(&core->plans, p))
        plan_unref(core, p);
    event *e = push_event_id(core, EV_PLANNED, h->id);
    h->plan = NULL;
    if (!e) {
        plan_unref(core, p);
        return NULL;
    }
    e->a = outcome;
    e->plan = p;
    memcpy(e->rid, h->rid, sizeof e->rid);
    memcpy(e->bkey, h->bkey, sizeof e->bkey);
    memcpy(e->ckey, h->ckey, sizeof e->ckey);
    e->started = h->started;
    e->nq = h->pnq;
    memcpy(e->q, h->pq, sizeof e->q);
    h->pnq = 0;
    return e;
}

static int is_tchar(uint8_t ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

#define ieq hp_ieq /* (plan.h) */

/* Whether the comma-separated value p[0:n] holds token tok (http11.header_tokens). */
static int has_token(const uint8_t *p, size_t n, const char *tok) {
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < n && p[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && (p[a] == ' ' || p[a] == '\t'))
            a++;
        while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t'))
            b--;
        if (ieq(p + a, b - a, tok))
            return 1;
        if (j >= n)
            return 0;
        i = j + 1;
    }
}

/* Whether the backend's response head h[0:n] (ending with its first CRLF CRLF) is a 101 that
 * http11.parse_response_head + check_backend_response accept with accept as the expected
 * Sec-WebSocket-Accept, and that carries no Sec-WebSocket-Extensions nor -Protocol (the
 * client's answer then depends on nothing the backend said). Never looser than Python: it
 * asks HTTP/1.1, a clean head (no CR, LF or NUL outside the CRLFs), one accept header; any
 * doubt answers 0 and Python judges the head (EV_UPSTREAM). */
static int plain_101(const uint8_t *h, size_t n, const uint8_t *accept, size_t alen) {
    static const char status[] = "HTTP/1.1 101";
    const size_t sl = sizeof status - 1;
    if (n < sl + 4 || memcmp(h + n - 4, "\r\n\r\n", 4) != 0 || memcmp(h, status, sl) != 0 ||
        (h[sl] != ' ' && h[sl] != '\r'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!h[i] || (h[i] == '\r' && (i + 1 >= n || h[i + 1] != '\n')) ||
            (h[i] == '\n' && (i == 0 || h[i - 1] != '\r')))
            return 0;
    }
    const uint8_t *end = h + n - 2; /* the empty line's CRLF */
    const uint8_t *p = (const uint8_t *)memmem(h, n, "\r\n", 2) + 2;
    int lines = 0, upgrade = 0, connection = 0, accepts = 0;
    while (p < end) {
        const uint8_t *eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
        if (!eol || ++lines > 100)
            return 0;
        const uint8_t *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p)
            return 0;
        for (const uint8_t *q = p; q < colon; q++)
            if (!is_tchar(*q))
                return 0;
        const uint8_t *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t nl = (size_t)(colon - p), vl = (size_t)(ve - v);
        if (ieq(p, nl, "sec-websocket-extensions") || ieq(p, nl, "sec-websocket-protocol"))
            return 0;
        if (ieq(p, nl, "upgrade")) {
            upgrade |= has_token(v, vl, "websocket");
        } else if (ieq(p, nl, "connection")) {
            connection |= has_token(v, vl, "upgrade");
        } else if (ieq(p, nl, "sec-websocket-accept")) {
            if (++accepts > 1 || vl != alen || memcmp(v, accept, alen) != 0)
                return 0;
        }
        p = eol + 2;
    }
    return upgrade && connection && accepts == 1;
}

static void hs_watch(CoreObject *core, hs *h, int client, uint32_t want) {
    int fd = client ? h->cfd : h->bfd;
    uint32_t *have = client ? &h->cev : &h->bev;
    int *reg = client ? &h->creg : &h->breg;
    if (fd < 0 || (*reg && *have == want))
        return;
    struct epoll_event ev = {.events = want, .data.ptr = client ? (void *)&h->ce : (void *)&h->be};
    if (epoll_ctl(core->epfd, *reg ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) == 0) {
        *reg = 1;
        *have = want;
    }
}

/* Forget the handshake; close_fds: its sockets too (else the caller took them). The memory
 * is freed after the current epoll batch (an event of it may still be queued). */
static void hs_free(CoreObject *core, hs *h, int close_fds) {
    if (h->state == HS_DEAD)
        return;
    if (close_fds) {
        if (h->cfd >= 0)
            close(h->cfd); /* close() drops the epoll registration too */
        if (h->bfd >= 0)
            close(h->bfd);
    }
    h->cfd = h->bfd = -1;
    hs_drop_fast(h);
    plan_unref(core, h->plan);
    h->plan = NULL;
    h->state = HS_DEAD;
    h->deadline = 0;
    core->hslots[h->slot] = NULL;
    core->hfree[core->nhfree++] = h->slot;
    core->nhlive--;
    h->next_dead = core->hdead;
    core->hdead = h;
}

static void hs_free_dead(CoreObject *core) {
    while (core->hdead) {
        hs *h = core->hdead;
        core->hdead = h->next_dead;
        free(h->cbuf);
        free(h->bbuf);
        free(h->out);
        free(h->expect);
        free(h->answer);
        free(h);
    }
}

static void hs_close_backend(CoreObject *core, hs *h) {
    if (h->bfd >= 0)
        close(h->bfd);
    h->bfd = -1;
    h->breg = 0;
    h->bev = 0;
}

static hs *hs_lookup(CoreObject *core, uint64_t id) {
    uint32_t slot = (uint32_t)(id & 0xFFFFFFFF);
    if (slot >= core->nhslots)
        return NULL;
    hs *h = core->hslots[slot];
    return h && h->id == id ? h : NULL;
}

static int hs_grow(CoreObject *core) {
    uint32_t n = core->nhslots ? core->nhslots * 2 : 256;
    hs **slots = realloc(core->hslots, n * sizeof *slots);
    if (!slots)
        return -1;
    core->hslots = slots;
    uint32_t *fs = realloc(core->hfree, n * sizeof *fs);
    if (!fs)
        return -1;
    core->hfree = fs;
    for (uint32_t i = n; i > core->nhslots; i--) {
        slots[i - 1] = NULL;
        fs[core->nhfree++] = i - 1;
    }
    core->nhslots = n;
    return 0;
}

static void hs_end_event(CoreObject *core, hs *h, int why) {
    if (h->plan) {
        plan_report(core, h, PLANNED_GONE);
        return;
    }
    event *e = push_event_id(core, EV_HS_END, h->id);
    if (e) {
        snprintf(e->text, sizeof e->text, "%s", h->peer);
        e->a = why; /* 0: the client went away (freed); 1: head timeout (waits for Python) */
    }
}

static void hs_upstream_event(CoreObject *core, hs *h, int err, int code) {
    hs_drop_fast(h); /* Python decides (and starts the relay with its own holds) */
    event *e = h->plan ? plan_report(core, h, PLANNED_UPSTREAM)
                       : push_event_id(core, EV_UPSTREAM, h->id);
    if (!e)
        return;
    if (e->kind == EV_UPSTREAM) {
        e->a = err;
        e->b = code;
    }
    e->err = err;
    e->code = code;
    if (err == UP_OK && h->bhead) {
        e->data = malloc(h->bhead);
        if (e->data) {
            memcpy(e->data, h->bbuf, h->bhead);
            e->len = h->bhead;
        }
    }
}

static void hs_accept(CoreObject *core) {
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        int fd = accept4(core->lfd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of fds or memory: the listener would stay readable and spin this thread;
                 * stop watching it for a moment (the backlog holds the clients meanwhile) */
                struct epoll_event ev = {.events = 0, .data.ptr = &core->listen_tag};
                epoll_ctl(core->epfd, EPOLL_CTL_MOD, core->lfd, &ev);
                set_deadline(core, &core->listen_resume, mono() + 0.1);
            }
            return; /* EAGAIN, or an error of that one connection */
        }
        hs *h = calloc(1, sizeof *h);
        if (!h || (!core->nhfree && hs_grow(core) < 0)) {
            free(h);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        h->slot = core->hfree[--core->nhfree];
        h->id = (core->next_id++ << 32) | h->slot;
        h->cfd = fd;
        h->bfd = -1;
        h->ce = (hs_end){TAG_HS_CLIENT, h};
        h->be = (hs_end){TAG_HS_BACKEND, h};
        if (sa.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, h->peer, sizeof h->peer);
        else if (sa.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, h->peer,
                      sizeof h->peer);
        core->hslots[h->slot] = h;
        core->nhlive++;
        core->accepted++;
        if (core->head_timeout > 0)
            set_deadline(core, &h->deadline, mono() + core->head_timeout);
        hs_watch(core, h, 1, EPOLLIN);
    }
}

static void hs_reply_flush(CoreObject *core, hs *h) {
    while (h->outoff < h->outlen) {
        ssize_t r = send(h->cfd, h->out + h->outoff, h->outlen - h->outoff,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                hs_watch(core, h, 1, EPOLLIN | EPOLLOUT);
                return;
            }
            hs_free(core, h, 1);
            return;
        }
        h->outoff += (size_t)r;
    }
    /* all out: our FIN, then wait (briefly) for the client's, so that closing does not answer
     * bytes it still sends with an RST that could destroy the answer unread */
    if (shutdown(h->cfd, SHUT_WR) < 0) {
        hs_free(core, h, 1);
        return;
    }
    set_deadline(core, &h->deadline, mono() + HS_LINGER);
    hs_watch(core, h, 1, EPOLLIN);
}

/* 32 random bytes from the core's pool (getrandom 4 KiB at a time, as RandomPool does). */
static int take_random(CoreObject *core, uint8_t *out, size_t n) {
    if (core->rnd_left < n) {
        ssize_t got = getrandom(core->rnd, sizeof core->rnd, 0);
        if (got != (ssize_t)sizeof core->rnd)
            return -1;
        core->rnd_left = sizeof core->rnd;
    }
    core->rnd_left -= n;
    memcpy(out, core->rnd + core->rnd_left, n);
    memset(core->rnd + core->rnd_left, 0, n);
    return 0;
}

/* A plan's backend request, client answer and expected backend accept for these values
 * (malloc'ed; 0, or -1 on no memory). Core.plan_build shows it to the differential test. */
static int plan_render(const hp_plan *p, const char *ckey, const char *bkey, const char *rid,
                       uint8_t **req, uint8_t **ans, uint8_t **expect) {
    *req = malloc(p->req_len);
    *ans = malloc(p->ans_len);
    *expect = malloc(HP_ACCEPT_LEN);
    if (!*req || !*ans || !*expect) {
        free(*req);
        free(*ans);
        free(*expect);
        *req = *ans = *expect = NULL;
        return -1;
    }
    memcpy(*req, p->req, p->req_len);
    memcpy(*req + p->req_key, bkey, HP_KEY_LEN);
    memcpy(*req + p->req_rid, rid, HP_RID_LEN);
    memcpy(*ans, p->ans, p->ans_len);
    hp_accept((const uint8_t *)ckey, HP_KEY_LEN, (char *)*ans + p->ans_accept);
    hp_accept((const uint8_t *)bkey, HP_KEY_LEN, (char *)*expect);
    return 0;
}

static void hs_connect(CoreObject *core, hs *h);

/* The head just completed: when a live plan has it (but for the key), do what Python would
 * do with it (CoreHandshakes._connect with the fast start) and return 1; else 0 (EV_HEAD). */
static int hs_try_plan(CoreObject *core, hs *h) {
    if (!core->plans.count ||
        atomic_load_explicit(&core->plan_started, memory_order_relaxed) >=
            atomic_load_explicit(&core->plan_allow, memory_order_acquire))
        return 0;
    uint8_t *end = memmem(h->cbuf, h->clen, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t n = (size_t)(end - h->cbuf) + 4, vs, ve, kat;
    if (!hp_key_span(h->cbuf, n, &vs, &ve, &kat))
        return 0;
    double now = mono();
    hp_plan *p = hp_find(&core->plans, h->cbuf, n, vs, ve, h->peer, now);
    if (!p)
        return 0;
    uint8_t raw[32];
    if (take_random(core, raw, sizeof raw) < 0)
        return 0;
    wq_counter *qs[MAX_QUOTAS];
    int nq = 0;
    for (; nq < p->nq; nq++) { /* NativeHub.throttle's acquire, for Python to release */
        qs[nq] = wq_acquire_kind(&core->quotas, p->q[nq].key, p->q[nq].limit, p->q[nq].window,
                                 now, 0);
        if (!qs[nq])
            break;
    }
    memcpy(h->ckey, h->cbuf + kat, HP_KEY_LEN);
    hp_base64(raw, 16, h->bkey);
    hp_hex16(raw + 16, h->rid);
    uint8_t *req, *ans, *expect;
    if (nq < p->nq || plan_render(p, h->ckey, h->bkey, h->rid, &req, &ans, &expect) < 0) {
        while (nq--)
            wq_release(&core->quotas, p->q[nq].key, qs[nq], now);
        return 0;
    }
    free(h->out);
    free(h->answer);
    free(h->expect);
    h->out = req;
    h->outlen = p->req_len;
    h->outoff = 0;
    h->answer = ans;
    h->answer_len = p->ans_len;
    h->expect = expect;
    h->expect_len = HP_ACCEPT_LEN;
    h->head_len = n;
    h->max_message = p->max_message;
    for (int i = 0; i < nq; i++) {
        h->pq[i] = h->fq[i] = qs[i];
        qs[i]->refs++; /* the fast start's own hold, besides Python's */
        h->fstops[i] = p->q[i].stop;
    }
    h->fnq = h->pnq = nq;
    h->fast = 1;
    memcpy(&h->sa, p->sa, sizeof h->sa);
    h->salen = p->salen;
    h->connect_timeout = p->connect_timeout;
    h->plan = p;
    p->refs++;
    h->started = now;
    atomic_fetch_add_explicit(&core->plan_started, 1, memory_order_release);
    core->planned++;
    h->state = HS_UPSTREAM;
    h->deadline = 0;
    hs_connect(core, h);
    return 1;
}

static void hs_client_readable(CoreObject *core, hs *h) {
    uint8_t *buf = core->rbuf;
    size_t room = READ_SIZE;
    if (h->state == HS_HEAD && room > core->max_head - h->clen)
        room = core->max_head - h->clen;
    ssize_t r = recv(h->cfd, buf, room, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (h->state == HS_REPLY) {
        if (r <= 0)
            hs_free(core, h, 1); /* the client's FIN (or an error): done */
        return;                  /* anything else it sends is dropped */
    }
    if (r <= 0) { /* the client went away before its relay started */
        hs_end_event(core, h, 0);
        hs_free(core, h, 1);
        return;
    }
    uint8_t *grown = realloc(h->cbuf, h->clen + (size_t)r);
    if (!grown) {
        hs_end_event(core, h, 0);
        hs_free(core, h, 1);
        return;
    }
    memcpy(grown + h->clen, buf, (size_t)r);
    size_t from = h->clen > 3 ? h->clen - 3 : 0;
    h->cbuf = grown;
    h->clen += (size_t)r;
    if (h->state == HS_HEAD) {
        if (!memmem(h->cbuf + from, h->clen - from, "\r\n\r\n", 4) && h->clen < core->max_head)
            return;
        h->state = HS_WAIT;
        h->deadline = 0;
        if (hs_try_plan(core, h))
            return;
        event *e = push_event_id(core, EV_HEAD, h->id);
        if (e) {
            snprintf(e->text, sizeof e->text, "%s", h->peer);
            e->data = malloc(h->clen);
            if (e->data) {
                memcpy(e->data, h->cbuf, h->clen);
                e->len = h->clen;
            }
        }
        return;
    }
    if (h->clen >= core->max_head + HS_EARLY_MAX)
        hs_watch(core, h, 1, 0); /* enough early data: wait for the decision */
}

static void hs_backend_ready(CoreObject *core, hs *h, uint32_t events) {
    if (h->state != HS_UPSTREAM) {
        /* waiting for Python with the backend's socket watched for nothing: an error or hang-up
         * is reported anyway (level-triggered), so stop watching it; the relay (start) adds it
         * again and sees the error itself */
        if (h->bfd >= 0 && h->breg && (events & (EPOLLERR | EPOLLHUP))) {
            epoll_ctl(core->epfd, EPOLL_CTL_DEL, h->bfd, NULL);
            h->breg = 0;
            h->bev = 0;
        }
        return;
    }
    if (!h->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(h->bfd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (!err && !(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        if (err || (events & EPOLLERR)) {
            hs_close_backend(core, h);
            h->state = HS_WAIT;
            h->deadline = 0;
            hs_upstream_event(core, h, UP_CONNECT, err ? err : ECONNREFUSED);
            return;
        }
        h->connected = 1;
    }
    while (h->outoff < h->outlen) {
        ssize_t r = send(h->bfd, h->out + h->outoff, h->outlen - h->outoff,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                hs_watch(core, h, 0, EPOLLIN | EPOLLOUT);
                return;
            }
            int err = errno;
            hs_close_backend(core, h);
            h->state = HS_WAIT;
            h->deadline = 0;
            hs_upstream_event(core, h, UP_CONNECT, err);
            return;
        }
        h->outoff += (size_t)r;
    }
    if (h->out) {
        free(h->out);
        h->out = NULL;
        h->outlen = h->outoff = 0;
    }
    hs_watch(core, h, 0, EPOLLIN);
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    uint8_t *buf = core->rbuf;
    ssize_t r = recv(h->bfd, buf, READ_SIZE, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (r <= 0) {
        hs_close_backend(core, h);
        h->state = HS_WAIT;
        h->deadline = 0;
        hs_upstream_event(core, h, UP_CLOSED, r < 0 ? errno : 0);
        return;
    }
    uint8_t *grown = realloc(h->bbuf, h->blen + (size_t)r);
    if (!grown) {
        hs_close_backend(core, h);
        h->state = HS_WAIT;
        h->deadline = 0;
        hs_upstream_event(core, h, UP_CONNECT, ENOMEM);
        return;
    }
    memcpy(grown + h->blen, buf, (size_t)r);
    size_t from = h->blen > 3 ? h->blen - 3 : 0;
    h->bbuf = grown;
    h->blen += (size_t)r;
    uint8_t *end = memmem(h->bbuf + from, h->blen - from, "\r\n\r\n", 4);
    if (!end) {
        if (h->blen >= HS_RESP_MAX) {
            hs_close_backend(core, h);
            h->state = HS_WAIT;
            h->deadline = 0;
            hs_upstream_event(core, h, UP_TOO_LARGE, 0);
        }
        return;
    }
    h->bhead = (size_t)(end - h->bbuf) + 4;
    h->state = HS_WAIT;
    h->deadline = 0;
    if (h->fast && hs_fast_start(core, h)) { /* (the relay takes the registration over) */
        if (h->state != HS_DEAD)
            hs_watch(core, h, 0, 0); /* no memory for the relay: it waits for Python */
        return;
    }
    hs_watch(core, h, 0, 0); /* the rest waits for the relay (or the close) */
    hs_upstream_event(core, h, UP_OK, 0);
}

static void hs_ready(CoreObject *core, hs_end *end, uint32_t events) {
    hs *h = end->h;
    if (h->state == HS_DEAD)
        return;
    if (end->kind == TAG_HS_BACKEND) {
        hs_backend_ready(core, h, events);
        return;
    }
    if (h->state == HS_REPLY && (events & EPOLLOUT) && h->outoff < h->outlen) {
        hs_reply_flush(core, h);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        hs_client_readable(core, h);
}

static void hs_expire(CoreObject *core, double now) {
    if (core->listen_resume && core->listen_resume <= now) {
        core->listen_resume = 0;
        if (core->lfd > 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &core->listen_tag};
            epoll_ctl(core->epfd, EPOLL_CTL_MOD, core->lfd, &ev);
        }
    }
    for (uint32_t i = 0; i < core->nhslots; i++) {
        hs *h = core->hslots[i];
        if (!h || !h->deadline || h->deadline > now)
            continue;
        h->deadline = 0;
        if (h->state == HS_HEAD) {
            h->state = HS_WAIT;
            hs_end_event(core, h, 1);
        } else if (h->state == HS_UPSTREAM) {
            hs_close_backend(core, h);
            h->state = HS_WAIT;
            hs_upstream_event(core, h, UP_TIMEOUT, 0);
        } else if (h->state == HS_REPLY) {
            hs_free(core, h, 1);
        }
    }
}

static double hs_next_deadline(CoreObject *core, double next) {
    if (core->listen_resume && (!next || core->listen_resume < next))
        next = core->listen_resume;
    for (uint32_t i = 0; i < core->nhslots; i++) {
        hs *h = core->hslots[i];
        if (h && h->deadline && (!next || h->deadline < next))
            next = h->deadline;
    }
    return next;
}

/* The sides read_again queued during the batch: each read once more (queued again if need be,
 * for the next turn). The lock is dropped between them as between events. */
static void read_again_all(CoreObject *core) {
    side *s = core->again;
    core->again = NULL;
    while (s) {
        side *next = s->next_again;
        s->again = 0;
        s->next_again = NULL;
        if (!s->lost && !s->doomed && !s->c->finished && (s->events & EPOLLIN)) {
            pthread_mutex_unlock(&core->lock);
            pthread_mutex_lock(&core->lock);
            readable(core, s);
            settle(core);
        }
        s = next;
    }
}

/* Queued sides of finished connections leave the queue before their memory is freed. */
static void forget_again(CoreObject *core) {
    side **at = &core->again;
    while (*at) {
        side *s = *at;
        if (s->c->finished) {
            *at = s->next_again;
            s->again = 0;
            s->next_again = NULL;
        } else {
            at = &s->next_again;
        }
    }
}

static void sched_turn(CoreObject *core);

static void *run(void *arg) {
    CoreObject *core = arg;
    struct epoll_event evs[MAX_EVENTS];
    int timeout = -1;
    for (;;) {
        int n = epoll_wait(core->epfd, evs, MAX_EVENTS, timeout);
        /* The lock is taken per event, not per batch, so that Python's calls (a handshake's
         * connect or start, a command) wait for one event's work at most. Memory of what ended
         * is only freed at the end of the batch, so every pointer in evs stays valid. */
        pthread_mutex_lock(&core->lock);
        if (core->stopping) {
            pthread_mutex_unlock(&core->lock);
            break;
        }
        for (int i = 0; i < n; i++) {
            if (i) {
                pthread_mutex_unlock(&core->lock);
                pthread_mutex_lock(&core->lock);
            }
            if (evs[i].data.ptr == NULL) { /* the wakeup eventfd */
                uint64_t v;
                ssize_t r = read(core->wakefd, &v, sizeof v);
                (void)r;
                hs_run_pending(core);
                if (core->retry_held)
                    resume_held(core, mono());
                continue;
            }
            int kind = *(int *)evs[i].data.ptr;
            if (kind == TAG_LISTEN) {
                if (core->lfd > 0)
                    hs_accept(core);
                continue;
            }
            if (kind != TAG_SIDE) {
                hs_ready(core, evs[i].data.ptr, evs[i].events);
                continue;
            }
            side *s = evs[i].data.ptr;
            if (s->lost || s->c->finished)
                continue;
            uint32_t e = evs[i].events;
            if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                s->eof_seen = 1;
            if (e & EPOLLOUT)
                flush(core, s);
            if ((e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !s->lost && !s->doomed) {
                if (s->events & EPOLLIN)
                    readable(core, s);
                else if (e & (EPOLLHUP | EPOLLERR))
                    doom(core, s);
            }
            settle(core);
        }
        read_again_all(core);
        sched_turn(core);
        timeout = core->again ? 0 : -1; /* read on at once, after what epoll has meanwhile */
        if (core->next_deadline) { /* only while connections are closing */
            double now = mono();
            if (core->next_deadline <= now) {
                expire(core, now); /* a scan of every connection, only when one is due */
                hs_expire(core, now);
                core->next_deadline = next_deadline(core);
            }
            double next = core->next_deadline;
            if (next && timeout)
                timeout = (int)((next - now) * 1000) + 1 < 1 ? 1 : (int)((next - now) * 1000) + 1;
        }
        forget_again(core); /* (before the free: a queued side's connection may have ended) */
        free_dead(core); /* only here: an epoll batch may still point at a finished one */
        hs_run_pending(core); /* (before the free: a pending one may have ended meanwhile) */
        hs_free_dead(core);
        pthread_mutex_unlock(&core->lock);
    }
    return NULL;
}

/* ---- Python API -------------------------------------------------------------------------- */

static void plan_collect(CoreObject *self);

static void lock(CoreObject *core) {
    if (pthread_mutex_trylock(&core->lock) != 0) {
        Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&core->lock);
        Py_END_ALLOW_THREADS
    }
}

static void wake(CoreObject *core) {
    uint64_t one = 1;
    ssize_t r = write(core->wakefd, &one, sizeof one);
    (void)r;
}

static conn *lookup(CoreObject *core, uint64_t id) {
    uint32_t slot = (uint32_t)(id & 0xFFFFFFFF);
    if (slot >= core->nslots)
        return NULL;
    conn *c = core->slots[slot];
    return c && c->id == id ? c : NULL;
}

/* The relay thread's scheduling policy. Under SCHED_BATCH the scheduler does not let the thread
 * preempt the running task when a socket event wakes it; it runs when that task's turn ends,
 * so it finds more events ready per wakeup and sleeps (a context switch each way) less per
 * message: on the 2-core bench box (loaded), messages per CPU-second rose ~1.35-1.45x at 64 B
 * and 4 KiB x 100 connections. The price is latency while the CPU is busy with other work: a
 * lone connection's round trip waits for the running task's turn to end (p99 at one
 * connection ~3x nginx's in a loaded run). So by default (auto) the thread is batch only while
 * many connections are active: at the end of each ACT_WINDOW, batch if at least ACT_BATCH
 * connections were read in it, normal if at most ACT_NORMAL (one sched_setscheduler per
 * switch). Timeslice and CPU share are a normal thread's (same nice). Unprivileged; refused:
 * the thread stays normal (Core.sched() tells the policy in effect). */
enum { SCHED_MODE_NORMAL, SCHED_MODE_BATCH, SCHED_MODE_AUTO };
#define ACT_WINDOW 0.01
#define ACT_BATCH 4
#define ACT_NORMAL 2

static void set_batch(CoreObject *core, pthread_t thread, int batch) {
    struct sched_param sp = {.sched_priority = 0};
    if (pthread_setschedparam(thread, batch ? SCHED_BATCH : SCHED_OTHER, &sp) == 0)
        core->sched_batch = batch;
}

/* Auto mode, once per turn of the relay thread: the window's verdict when it is over. */
static void sched_turn(CoreObject *core) {
    if (core->sched_mode != SCHED_MODE_AUTO)
        return;
    double now = mono();
    if (now - core->act_start < ACT_WINDOW)
        return;
    if (!core->sched_batch && core->act_count >= ACT_BATCH)
        set_batch(core, pthread_self(), 1);
    else if (core->sched_batch && core->act_count <= ACT_NORMAL)
        set_batch(core, pthread_self(), 0);
    core->act_start = now;
    core->act_count = 0;
    core->act_window++;
}

static int start_thread(CoreObject *self, int mode) {
    self->sched_mode = mode;
    self->act_window = 1;
    self->act_start = mono();
    if (pthread_create(&self->thread, NULL, run, self) != 0)
        return -1;
    if (mode == SCHED_MODE_BATCH) /* (from its first turns on: harmless if it ran before) */
        set_batch(self, self->thread, 1);
    return 0;
}

static int Core_init(CoreObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sched", NULL};
    const char *sched = "normal";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|s", kwlist, &sched))
        return -1;
    int mode = !strcmp(sched, "normal")  ? SCHED_MODE_NORMAL
               : !strcmp(sched, "batch") ? SCHED_MODE_BATCH
               : !strcmp(sched, "auto")  ? SCHED_MODE_AUTO
                                         : -1;
    if (mode < 0) {
        PyErr_SetString(PyExc_ValueError, "sched must be 'normal', 'batch' or 'auto'");
        return -1;
    }
    if (self->started) {
        PyErr_SetString(PyExc_RuntimeError, "Core already started");
        return -1;
    }
    pthread_mutex_init(&self->lock, NULL);
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    self->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->rbuf = malloc(WS_HEADROOM + READ_SIZE);
    if (self->epfd < 0 || self->wakefd < 0 || self->evfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (!self->rbuf || wq_table_init(&self->quotas) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    self->next_id = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(self->epfd, EPOLL_CTL_ADD, self->wakefd, &ev);
    if (start_thread(self, mode) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "cannot start the relay thread");
        return -1;
    }
    self->started = 1;
    return 0;
}

static void stop_thread(CoreObject *self) {
    if (!self->started)
        return;
    pthread_mutex_lock(&self->lock);
    self->stopping = 1;
    pthread_mutex_unlock(&self->lock);
    wake(self);
    Py_BEGIN_ALLOW_THREADS pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS self->started = 0;
    for (uint32_t i = 0; i < self->nslots; i++) {
        conn *c = self->slots[i];
        if (!c)
            continue;
        side *sides[2] = {&c->cl, &c->be};
        for (int k = 0; k < 2; k++)
            if (sides[k]->fd >= 0 && !sides[k]->lost)
                close(sides[k]->fd);
        self->slots[i] = NULL;
        c->next_dead = self->dead;
        self->dead = c;
    }
    self->nlive = 0;
    self->again = NULL; /* (sides of the connections freed here) */
    free_dead(self);
    close_listener(self);
    self->hpending = NULL;
    for (uint32_t i = 0; i < self->nhslots; i++)
        if (self->hslots[i])
            hs_free(self, self->hslots[i], 1);
    hs_free_dead(self);
}

static PyObject *Core_close(CoreObject *self, PyObject *unused) {
    stop_thread(self);
    Py_RETURN_NONE;
}

static void Core_dealloc(CoreObject *self) {
    stop_thread(self);
    if (self->epfd > 0)
        close(self->epfd);
    if (self->wakefd > 0)
        close(self->wakefd);
    if (self->evfd > 0)
        close(self->evfd);
    if (self->quotas.slots)
        wq_table_free(&self->quotas);
    free(self->slots);
    free(self->free_slots);
    free(self->hslots);
    free(self->hfree);
    for (size_t i = 0; i < self->nevents; i++) {
        free(self->events[i].data);
        if (self->events[i].kind == EV_PLANNED)
            plan_unref(self, self->events[i].plan);
    }
    free(self->events);
    free(self->rbuf);
    for (size_t i = 0; i < self->plans.nslots; i++)
        while (self->plans.slots[i]) {
            hp_plan *p = self->plans.slots[i];
            hp_remove(&self->plans, p);
            plan_unref(self, p);
        }
    free(self->plans.slots);
    plan_collect(self); /* (handshakes still holding a plan keep it: freed with them, never) */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int grow_slots(CoreObject *core) {
    uint32_t n = core->nslots ? core->nslots * 2 : 256;
    conn **slots = realloc(core->slots, n * sizeof *slots);
    if (!slots)
        return -1;
    core->slots = slots;
    uint32_t *fs = realloc(core->free_slots, n * sizeof *fs);
    if (!fs)
        return -1;
    core->free_slots = fs;
    for (uint32_t i = n; i > core->nslots; i--) {
        slots[i - 1] = NULL;
        fs[core->nfree++] = i - 1;
    }
    core->nslots = n;
    return 0;
}

static void init_side(side *s, conn *c, side *peer, int fd, int is_client) {
    s->c = c;
    s->peer = peer;
    s->fd = fd;
    s->is_client = is_client;
    s->mode = RELAY;
}

static void feed_early(CoreObject *core, side *s, const uint8_t *p, size_t n) {
    if (!n)
        return;
    uint8_t *buf = malloc(n + WS_HEADROOM);
    if (!buf) {
        abort_conn(core, s->c, "no memory for the early bytes");
        return;
    }
    memcpy(buf + WS_HEADROOM, p, n);
    received(core, s, buf + WS_HEADROOM, n);
    free(buf);
}

/* Core.add / Core.start: both sockets relayed from now on. Under the lock; the quota handles
 * are checked. reg: the fds are already registered with epoll (a handshake of the core). */
static conn *add_conn(CoreObject *self, int cfd, int bfd, int creg, int breg,
                      const uint8_t *to_client, size_t to_client_len, const uint8_t *cearly,
                      size_t cearly_len, const uint8_t *bearly, size_t bearly_len,
                      unsigned long long max_message, int allow_rsv, wq_counter **qs,
                      const uint8_t *stops, int nq) {
    conn *c = calloc(1, sizeof *c);
    if (!c || (!self->nfree && grow_slots(self) < 0)) {
        free(c);
        return NULL;
    }
    c->slot = self->free_slots[--self->nfree];
    c->id = (self->next_id++ << 32) | c->slot;
    c->router_code = -1;
    static const char breason[] = "client connection closed by the gateway";
    memcpy(c->backend_reason, breason, sizeof breason - 1);
    c->backend_reason_len = (int)sizeof breason - 1;
    c->nq = nq;
    for (int i = 0; i < c->nq; i++) {
        c->q[i] = qs[i];
        qs[i]->refs++; /* the connection's own hold, dropped when it is freed */
        c->stop[i] = stops[i];
    }
    init_side(&c->cl, c, &c->be, cfd, 1);
    init_side(&c->be, c, &c->cl, bfd, 0);
    ws_scan_init(&c->cl.scan, 1, max_message, allow_rsv, nq > 0, conn_admit, c);
    ws_scan_init(&c->be.scan, 0, max_message, allow_rsv, nq > 0, conn_admit, c);
    self->slots[c->slot] = c;
    self->nlive++;
    side *sides[2] = {&c->cl, &c->be};
    int regs[2] = {creg, breg};
    for (int k = 0; k < 2; k++) {
        if (!regs[k]) {
            int fl = fcntl(sides[k]->fd, F_GETFL);
            fcntl(sides[k]->fd, F_SETFL, fl | O_NONBLOCK);
        }
        sides[k]->events = registration(EPOLLIN);
        struct epoll_event ev = {.events = sides[k]->events, .data.ptr = sides[k]};
        if (epoll_ctl(self->epfd, regs[k] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, sides[k]->fd, &ev) < 0)
            doom(self, sides[k]);
    }
    /* Relay.start: the 101 first, then what each side sent during the handshakes. */
    put(self, &c->cl, to_client, to_client_len);
    feed_early(self, &c->be, bearly, bearly_len);
    if (!c->finished && !c->be.lost)
        feed_early(self, &c->cl, cearly, cearly_len);
    return c;
}

static int parse_quotas(PyObject *quotas, wq_counter **qs, uint8_t *stops) {
    Py_ssize_t nq = PyTuple_GET_SIZE(quotas);
    if (nq > MAX_QUOTAS) {
        PyErr_SetString(PyExc_ValueError, "too many quotas for one connection");
        return -1;
    }
    for (Py_ssize_t i = 0; i < nq; i++) {
        PyObject *item = PyTuple_GET_ITEM(quotas, i);
        PyObject *handle;
        int stop;
        if (!PyArg_ParseTuple(item, "Op", &handle, &stop))
            return -1;
        qs[i] = PyLong_AsVoidPtr(handle);
        if (!qs[i])
            return -1;
        stops[i] = (uint8_t)stop;
    }
    return (int)nq;
}

static PyObject *Core_add(CoreObject *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"client_fd",   "backend_fd", "to_client", "client_early",
                         "backend_early", "max_message", "allow_rsv", "quotas", NULL};
    int cfd, bfd, allow_rsv;
    Py_buffer to_client, client_early, backend_early;
    unsigned long long max_message;
    PyObject *quotas;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiy*y*y*KpO!", kw, &cfd, &bfd, &to_client,
                                     &client_early, &backend_early, &max_message, &allow_rsv,
                                     &PyTuple_Type, &quotas))
        return NULL;
    PyObject *result = NULL;
    wq_counter *qs[MAX_QUOTAS];
    uint8_t stops[MAX_QUOTAS];
    int nq = parse_quotas(quotas, qs, stops);
    if (nq < 0)
        goto out;
    if (!self->started) {
        PyErr_SetString(PyExc_RuntimeError, "Core is closed");
        goto out;
    }
    lock(self);
    conn *c = add_conn(self, cfd, bfd, 0, 0, to_client.buf, (size_t)to_client.len,
                       client_early.buf, (size_t)client_early.len, backend_early.buf,
                       (size_t)backend_early.len, max_message, allow_rsv, qs, stops, nq);
    if (!c) {
        pthread_mutex_unlock(&self->lock);
        PyErr_NoMemory();
        goto out;
    }
    uint64_t id = c->id;
    settle(self);
    pthread_mutex_unlock(&self->lock);
    wake(self);
    result = PyLong_FromUnsignedLongLong(id);
out:
    PyBuffer_Release(&to_client);
    PyBuffer_Release(&client_early);
    PyBuffer_Release(&backend_early);
    return result;
}

/* ---- handshakes: Python's side ------------------------------------------------------------ */

static PyObject *Core_listen(CoreObject *self, PyObject *args) {
    int fd;
    Py_ssize_t max_head;
    double timeout;
    if (!PyArg_ParseTuple(args, "ind", &fd, &max_head, &timeout))
        return NULL;
    if (max_head < 16 || max_head > READ_SIZE) {
        PyErr_SetString(PyExc_ValueError, "max_head must be 16..65536");
        return NULL;
    }
    lock(self);
    if (self->lfd > 0 || !self->started) {
        pthread_mutex_unlock(&self->lock);
        PyErr_SetString(PyExc_RuntimeError, "the core already listens (or is closed)");
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    self->max_head = (size_t)max_head;
    self->head_timeout = timeout;
    self->listen_tag = TAG_LISTEN;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &self->listen_tag};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        pthread_mutex_unlock(&self->lock);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->lfd = fd;
    pthread_mutex_unlock(&self->lock);
    wake(self);
    Py_RETURN_NONE;
}

static void close_listener(CoreObject *self) {
    if (self->lfd > 0) {
        epoll_ctl(self->epfd, EPOLL_CTL_DEL, self->lfd, NULL);
        close(self->lfd);
        self->lfd = 0;
    }
}

static PyObject *Core_unlisten(CoreObject *self, PyObject *unused) {
    lock(self);
    close_listener(self);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static hs *hs_waiting(CoreObject *self, unsigned long long id) {
    hs *h = hs_lookup(self, id);
    return h && h->state == HS_WAIT ? h : NULL;
}

static PyObject *Core_handback(CoreObject *self, PyObject *arg) {
    unsigned long long id = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    lock(self);
    hs *h = hs_waiting(self, id);
    if (!h || h->bfd >= 0) {
        pthread_mutex_unlock(&self->lock);
        Py_RETURN_NONE;
    }
    PyObject *data = PyBytes_FromStringAndSize((const char *)h->cbuf, (Py_ssize_t)h->clen);
    if (!data) {
        pthread_mutex_unlock(&self->lock);
        return NULL;
    }
    int fd = h->cfd;
    if (h->creg)
        epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL);
    h->cfd = -1;
    hs_free(self, h, 1);
    self->handed_back++;
    pthread_mutex_unlock(&self->lock);
    return Py_BuildValue("(iN)", fd, data);
}

static PyObject *Core_reply(CoreObject *self, PyObject *args) {
    unsigned long long id;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "Ky*", &id, &data))
        return NULL;
    lock(self);
    hs *h = hs_waiting(self, id);
    int ok = h != NULL;
    if (h) {
        hs_close_backend(self, h);
        free(h->out);
        h->out = malloc(data.len ? (size_t)data.len : 1);
        if (!h->out) {
            hs_free(self, h, 1);
        } else {
            memcpy(h->out, data.buf, (size_t)data.len);
            h->outlen = (size_t)data.len;
            h->outoff = 0;
            h->state = HS_REPLY;
            set_deadline(self, &h->deadline, mono() + HS_LINGER + 10.0);
            hs_reply_flush(self, h);
        }
    }
    pthread_mutex_unlock(&self->lock);
    wake(self);
    PyBuffer_Release(&data);
    return PyBool_FromLong(ok);
}

static PyObject *Core_connect(CoreObject *self, PyObject *args) {
    unsigned long long id;
    const char *host;
    int port;
    Py_buffer request;
    Py_ssize_t head_len;
    double timeout;
    Py_buffer expect = {0}, answer = {0};
    unsigned long long max_message = 0;
    PyObject *quotas = NULL;
    if (!PyArg_ParseTuple(args, "Ksiy*nd|y*y*KO!", &id, &host, &port, &request, &head_len,
                          &timeout, &expect, &answer, &max_message, &PyTuple_Type, &quotas))
        return NULL;
    PyObject *result = NULL;
    wq_counter *qs[MAX_QUOTAS];
    uint8_t stops[MAX_QUOTAS];
    int nq = quotas ? parse_quotas(quotas, qs, stops) : 0;
    if (nq < 0)
        goto out;
    struct sockaddr_storage sa;
    socklen_t salen;
    memset(&sa, 0, sizeof sa);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&sa;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        salen = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        salen = sizeof *v6;
    } else {
        PyErr_SetString(PyExc_ValueError, "host must be an IP address");
        goto out;
    }
    lock(self);
    hs *h = hs_waiting(self, id);
    if (!h || h->bfd >= 0 || head_len < 0 || (size_t)head_len > h->clen) {
        pthread_mutex_unlock(&self->lock);
        result = PyBool_FromLong(0);
        goto out;
    }
    h->head_len = (size_t)head_len;
    hs_drop_fast(h);
    if (expect.buf && expect.len > 0) {
        free(h->expect);
        free(h->answer);
        h->expect = malloc((size_t)expect.len);
        h->answer = malloc(answer.len ? (size_t)answer.len : 1);
        if (h->expect && h->answer) {
            memcpy(h->expect, expect.buf, (size_t)expect.len);
            h->expect_len = (size_t)expect.len;
            memcpy(h->answer, answer.buf, (size_t)answer.len);
            h->answer_len = (size_t)answer.len;
            h->max_message = max_message;
            for (int i = 0; i < nq; i++) {
                h->fq[i] = qs[i];
                qs[i]->refs++; /* held until the relay takes its own, or the fast start is off */
                h->fstops[i] = stops[i];
            }
            h->fnq = nq;
            h->fast = 1;
        }
    }
    free(h->out);
    h->out = malloc(request.len ? (size_t)request.len : 1);
    if (!h->out) {
        h->state = HS_WAIT;
        hs_upstream_event(self, h, UP_CONNECT, ENOMEM);
    } else {
        memcpy(h->out, request.buf, (size_t)request.len);
        h->outlen = (size_t)request.len;
        h->outoff = 0;
        memcpy(&h->sa, &sa, sizeof sa);
        h->salen = salen;
        h->connect_timeout = timeout;
        h->state = HS_UPSTREAM;
        h->next_pending = self->hpending;
        self->hpending = h;
    }
    pthread_mutex_unlock(&self->lock);
    wake(self);
    result = PyBool_FromLong(1);
out:
    PyBuffer_Release(&request);
    if (expect.buf)
        PyBuffer_Release(&expect);
    if (answer.buf)
        PyBuffer_Release(&answer);
    return result;
}

/* The relay thread's side of Core.connect: the socket calls. */
static void hs_connect(CoreObject *core, hs *h) {
    int fd = socket(h->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int err = fd < 0 ? errno : 0;
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        h->bfd = fd;
        if (h->connect_timeout > 0)
            set_deadline(core, &h->deadline, mono() + h->connect_timeout);
        if (connect(fd, (struct sockaddr *)&h->sa, h->salen) == 0) {
            h->connected = 1;
            hs_backend_ready(core, h, EPOLLOUT);
            return;
        }
        if (errno == EINPROGRESS) {
            hs_watch(core, h, 0, EPOLLOUT);
            return;
        }
        err = errno;
    }
    hs_close_backend(core, h);
    free(h->out);
    h->out = NULL;
    h->state = HS_WAIT;
    h->deadline = 0;
    hs_upstream_event(core, h, UP_CONNECT, err);
}

static void hs_run_pending(CoreObject *core) {
    while (core->hpending) {
        hs *h = core->hpending;
        core->hpending = h->next_pending;
        h->next_pending = NULL;
        if (h->state == HS_UPSTREAM && h->bfd < 0)
            hs_connect(core, h);
    }
}

/* The backend's response head is in: when it is a plain 101 (plain_101), send the client's 101
 * and relay both sockets now, as Core.start would, and tell Python (EV_STARTED, before any
 * report of the new relay); else 0 (Python judges the head). Relay thread, under the lock. */
static int hs_fast_start(CoreObject *core, hs *h) {
    if (!plain_101(h->bbuf, h->bhead, h->expect, h->expect_len))
        return 0;
    hp_plan *planned = h->plan;
    if (planned ? !plan_report(core, h, PLANNED_STARTED) : !push_event_id(core, EV_STARTED, h->id))
        return 0; /* Python must hear of the relay: it goes the slow way */
    size_t at = core->nevents - 1; /* (add_conn may push more: the array may move) */
    conn *c = add_conn(core, h->cfd, h->bfd, h->creg, h->breg, h->answer, h->answer_len,
                       h->cbuf + h->head_len, h->clen - h->head_len, h->bbuf + h->bhead,
                       h->blen - h->bhead, h->max_message, 0, h->fq, h->fstops, h->fnq);
    event *e = &core->events[at];
    if (!c) { /* no memory: the report becomes the head for Python (Core.start may work) */
        if (planned && hp_remove(&core->plans, planned))
            plan_unref(core, planned);
        if (!planned)
            e->kind = EV_UPSTREAM;
        e->err = UP_OK;
        e->a = planned ? PLANNED_UPSTREAM : UP_OK;
        e->data = malloc(h->bhead);
        if (e->data) {
            memcpy(e->data, h->bbuf, h->bhead);
            e->len = h->bhead;
        }
        hs_drop_fast(h);
        return 1;
    }
    e->relay = c->id;
    hs_free(core, h, 0); /* the relay owns the sockets now (hs_free drops the fast holds) */
    core->fast_started++; /* (every relay of a core handshake) */
    core->self_started++; /* (those started without Python) */
    settle(core);
    return 1;
}

static PyObject *Core_start(CoreObject *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"hid", "to_client", "max_message", "allow_rsv", "quotas", NULL};
    unsigned long long id, max_message;
    int allow_rsv;
    Py_buffer to_client;
    PyObject *quotas;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Ky*KpO!", kw, &id, &to_client, &max_message,
                                     &allow_rsv, &PyTuple_Type, &quotas))
        return NULL;
    PyObject *result = NULL;
    wq_counter *qs[MAX_QUOTAS];
    uint8_t stops[MAX_QUOTAS];
    int nq = parse_quotas(quotas, qs, stops);
    if (nq < 0)
        goto out;
    lock(self);
    hs *h = hs_waiting(self, id);
    if (!h || h->bfd < 0 || !h->bhead) {
        pthread_mutex_unlock(&self->lock);
        result = Py_NewRef(Py_None);
        goto out;
    }
    conn *c = add_conn(self, h->cfd, h->bfd, h->creg, h->breg, to_client.buf,
                       (size_t)to_client.len, h->cbuf + h->head_len, h->clen - h->head_len,
                       h->bbuf + h->bhead, h->blen - h->bhead, max_message, allow_rsv, qs, stops,
                       nq);
    if (!c) {
        pthread_mutex_unlock(&self->lock);
        PyErr_NoMemory();
        goto out;
    }
    hs_free(self, h, 0); /* the relay owns the sockets now */
    self->fast_started++;
    uint64_t cid = c->id;
    settle(self);
    pthread_mutex_unlock(&self->lock);
    wake(self);
    result = PyLong_FromUnsignedLongLong(cid);
out:
    PyBuffer_Release(&to_client);
    return result;
}

static PyObject *Core_terminate(CoreObject *self, PyObject *args) {
    unsigned long long id;
    int code;
    Py_buffer reason, breason;
    if (!PyArg_ParseTuple(args, "Kiy*y*", &id, &code, &reason, &breason))
        return NULL;
    lock(self);
    conn *c = lookup(self, id);
    int done = c ? terminate(self, c, code, reason.buf, (int)reason.len, breason.buf,
                             (int)breason.len)
                 : 0;
    settle(self);
    pthread_mutex_unlock(&self->lock);
    wake(self);
    PyBuffer_Release(&reason);
    PyBuffer_Release(&breason);
    return PyBool_FromLong(done);
}

static PyObject *Core_shutdown(CoreObject *self, PyObject *args) {
    unsigned long long id;
    int code;
    Py_buffer reason;
    if (!PyArg_ParseTuple(args, "Kiy*", &id, &code, &reason))
        return NULL;
    lock(self);
    conn *c = lookup(self, id);
    if (c)
        shutdown_conn(self, c, code, reason.buf, (int)reason.len);
    settle(self);
    pthread_mutex_unlock(&self->lock);
    wake(self);
    PyBuffer_Release(&reason);
    return PyBool_FromLong(c != NULL);
}

static PyObject *Core_abort(CoreObject *self, PyObject *args) {
    unsigned long long id;
    const char *why = "aborted by the router";
    if (!PyArg_ParseTuple(args, "K|s", &id, &why))
        return NULL;
    lock(self);
    conn *c = lookup(self, id);
    if (c)
        abort_conn(self, c, why);
    settle(self);
    pthread_mutex_unlock(&self->lock);
    wake(self);
    return PyBool_FromLong(c != NULL);
}

static PyObject *counts_tuple(conn *c) {
    ws_scan *up = &c->cl.scan, *down = &c->be.scan;
    return Py_BuildValue("(KKKKKKK)", (unsigned long long)up->frames,
                         (unsigned long long)down->frames, (unsigned long long)up->messages,
                         (unsigned long long)down->messages, (unsigned long long)up->bytes,
                         (unsigned long long)down->bytes,
                         (unsigned long long)(up->dropped + down->dropped));
}

static PyObject *Core_counts(CoreObject *self, PyObject *arg) {
    unsigned long long id = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    lock(self);
    conn *c = lookup(self, id);
    PyObject *r = c ? counts_tuple(c) : (Py_INCREF(Py_None), Py_None);
    pthread_mutex_unlock(&self->lock);
    return r;
}

static PyObject *Core_flow(CoreObject *self, PyObject *arg) {
    unsigned long long id = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    lock(self);
    conn *c = lookup(self, id);
    PyObject *r;
    if (!c) {
        r = Py_NewRef(Py_None);
    } else {
        r = Py_BuildValue("(nnOO)", (Py_ssize_t)(c->cl.pend_len - c->cl.pend_off),
                          (Py_ssize_t)(c->be.pend_len - c->be.pend_off),
                          (c->cl.events & EPOLLIN) ? Py_True : Py_False,
                          (c->be.events & EPOLLIN) ? Py_True : Py_False);
    }
    pthread_mutex_unlock(&self->lock);
    return r;
}

static PyObject *Core_scan_state(CoreObject *self, PyObject *arg) {
    unsigned long long id = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    lock(self);
    conn *c = lookup(self, id);
    PyObject *r;
    if (!c) {
        r = Py_NewRef(Py_None);
    } else {
        r = Py_BuildValue("(KKOOO)", (unsigned long long)c->cl.scan.dropped,
                          (unsigned long long)c->be.scan.dropped,
                          ws_scan_at_boundary(&c->cl.scan) ? Py_True : Py_False,
                          ws_scan_at_boundary(&c->be.scan) ? Py_True : Py_False,
                          c->cl.scan.gated ? Py_True : Py_False);
    }
    pthread_mutex_unlock(&self->lock);
    return r;
}

static PyObject *Core_snapshot(CoreObject *self, PyObject *unused) {
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    lock(self);
    for (uint32_t i = 0; i < self->nslots; i++) {
        conn *c = self->slots[i];
        if (!c)
            continue;
        PyObject *key = PyLong_FromUnsignedLongLong(c->id);
        PyObject *val = counts_tuple(c);
        if (!key || !val || PyDict_SetItem(d, key, val) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(val);
            Py_DECREF(d);
            pthread_mutex_unlock(&self->lock);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(val);
    }
    pthread_mutex_unlock(&self->lock);
    return d;
}

static PyObject *close_state(event *e, int i) {
    if (e->close_code[i] < 0)
        return Py_BuildValue("(OKO)", e->close_seen[i] ? Py_True : Py_False,
                             (unsigned long long)e->close_seq[i], Py_None);
    return Py_BuildValue("(OKi)", e->close_seen[i] ? Py_True : Py_False,
                         (unsigned long long)e->close_seq[i], e->close_code[i]);
}

static PyObject *Core_events(CoreObject *self, PyObject *unused) {
    uint64_t v;
    ssize_t r = read(self->evfd, &v, sizeof v);
    (void)r;
    lock(self);
    event *evs = self->events;
    size_t n = self->nevents;
    self->events = NULL;
    self->nevents = self->capevents = 0;
    pthread_mutex_unlock(&self->lock);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        event *e = &evs[i];
        PyObject *item = NULL;
        unsigned long long id = (unsigned long long)e->id;
        switch (e->kind) {
        case EV_CLOSED: {
            PyObject *up = close_state(e, 0), *down = close_state(e, 1);
            item = Py_BuildValue(
                "(iKOsONN(KKKKKKK))", EV_CLOSED, id,
                e->a >= 0 ? PyLong_FromLong(e->a) : (Py_INCREF(Py_None), Py_None),
                BY_NAMES[e->b], e->terminating ? Py_True : Py_False, up, down,
                (unsigned long long)e->counts[0], (unsigned long long)e->counts[1],
                (unsigned long long)e->counts[2], (unsigned long long)e->counts[3],
                (unsigned long long)e->counts[4], (unsigned long long)e->counts[5],
                (unsigned long long)e->counts[6]);
            break;
        }
        case EV_THROTTLED:
            item = Py_BuildValue("(iKiO)", EV_THROTTLED, id, e->a, e->b ? Py_True : Py_False);
            break;
        case EV_ERROR:
            item = Py_BuildValue("(iKOis)", EV_ERROR, id, e->a ? Py_True : Py_False, e->b,
                                 e->text);
            break;
        case EV_LEASE: /* id is the counter's handle */
            item = Py_BuildValue("(iN)", EV_LEASE, PyLong_FromVoidPtr((void *)(uintptr_t)e->id));
            break;
        case EV_HEAD:
            item = Py_BuildValue("(iKsy#)", EV_HEAD, id, e->text,
                                 e->data ? (const char *)e->data : "", (Py_ssize_t)e->len);
            break;
        case EV_UPSTREAM:
            item = Py_BuildValue("(iKiiy#)", EV_UPSTREAM, id, e->a, e->b,
                                 e->data ? (const char *)e->data : "", (Py_ssize_t)e->len);
            break;
        case EV_HS_END:
            item = Py_BuildValue("(iKis)", EV_HS_END, id, e->a, e->text);
            break;
        case EV_STARTED:
            item = Py_BuildValue("(iKK)", EV_STARTED, id, (unsigned long long)e->relay);
            break;
        case EV_PLANNED: {
            PyObject *handles = PyTuple_New(e->nq);
            for (int k = 0; handles && k < e->nq; k++) {
                PyObject *hd = PyLong_FromVoidPtr(e->q[k]);
                if (!hd) {
                    Py_CLEAR(handles);
                    break;
                }
                PyTuple_SET_ITEM(handles, k, hd);
            }
            if (!handles)
                break;
            item = Py_BuildValue("(iKiOKs#s#s#dNiiy#)", EV_PLANNED, id, e->a,
                                 e->plan && e->plan->ctx ? (PyObject *)e->plan->ctx : Py_None,
                                 (unsigned long long)e->relay, e->rid, (Py_ssize_t)HP_RID_LEN,
                                 e->bkey, (Py_ssize_t)HP_KEY_LEN, e->ckey, (Py_ssize_t)HP_KEY_LEN,
                                 e->started, handles, e->err, e->code,
                                 e->data ? (const char *)e->data : "", (Py_ssize_t)e->len);
            break;
        }
        default:
            item = Py_BuildValue("(iKs)", EV_ABORT, id, e->text);
        }
        if (!item) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    lock(self);
    for (size_t i = 0; i < n; i++)
        if (evs[i].kind == EV_PLANNED)
            plan_unref(self, evs[i].plan);
    pthread_mutex_unlock(&self->lock);
    for (size_t i = 0; i < n; i++)
        free(evs[i].data);
    free(evs);
    plan_collect(self);
    return list;
}

static PyObject *Core_fileno(CoreObject *self, PyObject *unused) {
    return PyLong_FromLong(self->evfd);
}

static PyObject *Core_acquire(CoreObject *self, PyObject *args) {
    const char *key;
    long long limit;
    double window, now;
    int leased = 0;
    if (!PyArg_ParseTuple(args, "sLdd|p", &key, &limit, &window, &now, &leased))
        return NULL;
    lock(self);
    wq_counter *c = wq_acquire_kind(&self->quotas, key, limit, window, now, leased);
    pthread_mutex_unlock(&self->lock);
    if (!c) {
        PyErr_SetString(PyExc_ValueError, "a quota needs limit >= 1 and window > 0");
        return NULL;
    }
    return PyLong_FromVoidPtr(c);
}

static PyObject *Core_release(CoreObject *self, PyObject *args) {
    const char *key;
    PyObject *handle;
    double now;
    if (!PyArg_ParseTuple(args, "sOd", &key, &handle, &now))
        return NULL;
    void *c = NULL;
    if (handle != Py_None && !(c = PyLong_AsVoidPtr(handle)))
        return NULL;
    lock(self);
    wq_release(&self->quotas, key, c, now);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

/* The shared table, for the Python relay's connections (wss) counting against the same keys:
 * router.native.CoreCounterStore. */
static int handle_arg(PyObject *args, wq_counter **c, double *now) {
    PyObject *handle;
    if (!PyArg_ParseTuple(args, "Od", &handle, now))
        return -1;
    *c = PyLong_AsVoidPtr(handle);
    return *c ? 0 : -1;
}

static PyObject *Core_admit(CoreObject *self, PyObject *args) {
    PyObject *handles;
    double now;
    int may_hold = 0;
    if (!PyArg_ParseTuple(args, "O!d|p", &PyTuple_Type, &handles, &now, &may_hold))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(handles);
    if (n > MAX_QUOTAS) {
        PyErr_SetString(PyExc_ValueError, "too many quotas for one connection");
        return NULL;
    }
    wq_counter *cs[MAX_QUOTAS];
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(cs[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(handles, i))))
            return NULL;
    lock(self);
    int r = may_hold ? wq_decide(cs, (int)n, now) : wq_admit(cs, (int)n, now);
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromLong(r);
}

static PyObject *Core_available(CoreObject *self, PyObject *args) {
    wq_counter *c;
    double now;
    if (handle_arg(args, &c, &now) < 0)
        return NULL;
    lock(self);
    int r = wq_available(c, now);
    pthread_mutex_unlock(&self->lock);
    return PyBool_FromLong(r);
}

static PyObject *Core_take(CoreObject *self, PyObject *args) {
    wq_counter *c;
    double now;
    if (handle_arg(args, &c, &now) < 0)
        return NULL;
    lock(self);
    wq_take(c, now);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *Core_idle(CoreObject *self, PyObject *args) {
    wq_counter *c;
    double now;
    if (handle_arg(args, &c, &now) < 0)
        return NULL;
    lock(self);
    int r = wq_idle(c, now);
    pthread_mutex_unlock(&self->lock);
    return PyBool_FromLong(r);
}

static PyObject *Core_unref(CoreObject *self, PyObject *arg) {
    wq_counter *c = PyLong_AsVoidPtr(arg);
    if (!c)
        return NULL;
    lock(self);
    wq_counter_unref(c);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

/* Leased counters (router.native.LeasePump): Python moves permits in and takes them back. */

/* Under the lock: the pool of c changed (gen moved): the sides it holds are fed again. */
static void pool_changed(CoreObject *core, wq_counter *c, uint64_t gen) {
    if (c->gen != gen && core->nheld && !core->retry_held) {
        core->retry_held = 1;
        wake(core);
    }
}

static wq_counter *leased_arg(PyObject *handle) {
    wq_counter *c = PyLong_AsVoidPtr(handle);
    if (c && !c->leased) {
        PyErr_SetString(PyExc_ValueError, "not a leased counter");
        return NULL;
    }
    return c;
}

static PyObject *Core_lease_put(CoreObject *self, PyObject *args) {
    PyObject *handle;
    int slot;
    long long n, low;
    double from, until;
    if (!PyArg_ParseTuple(args, "OiLddL", &handle, &slot, &n, &from, &until, &low))
        return NULL;
    wq_counter *c = leased_arg(handle);
    if (!c)
        return NULL;
    if (slot < 0 || slot >= WQ_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "no such slot");
        return NULL;
    }
    lock(self);
    uint64_t gen = c->gen;
    int64_t back = wq_lease_put(c, slot, n, from, until, low);
    pool_changed(self, c, gen);
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromLongLong(back);
}

static PyObject *Core_lease_take_back(CoreObject *self, PyObject *args) {
    PyObject *handle;
    int slot;
    if (!PyArg_ParseTuple(args, "Oi", &handle, &slot))
        return NULL;
    wq_counter *c = leased_arg(handle);
    if (!c)
        return NULL;
    lock(self);
    int64_t n = wq_lease_take_back(c, slot);
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromLongLong(n);
}

static PyObject *Core_lease_state(CoreObject *self, PyObject *arg) {
    wq_counter *c = leased_arg(arg);
    if (!c)
        return NULL;
    lock(self);
    wq_slot s[WQ_SLOTS];
    memcpy(s, c->slot, sizeof s);
    unsigned long long used = c->used, refused = c->refused, waits = c->waits;
    long long allow = c->allow, credited = c->ncredit;
    double dry = c->dry_until;
    pthread_mutex_unlock(&self->lock);
    return Py_BuildValue("((Ldd)(Ldd)(Ldd)KKLLKd)", (long long)s[0].n, s[0].from, s[0].until,
                         (long long)s[1].n, s[1].from, s[1].until, (long long)s[2].n,
                         s[2].from, s[2].until, used, refused, allow, credited, waits, dry);
}

static PyObject *Core_lease_credit(CoreObject *self, PyObject *args) {
    PyObject *handle;
    long long add;
    if (!PyArg_ParseTuple(args, "OL", &handle, &add))
        return NULL;
    wq_counter *c = leased_arg(handle);
    if (!c)
        return NULL;
    if (add < 0) {
        PyErr_SetString(PyExc_ValueError, "the allowance only grows (lease_credit_revoke)");
        return NULL;
    }
    double at[WQ_CREDIT_MAX];
    lock(self);
    uint64_t gen = c->gen;
    int n = wq_lease_credit(c, add, at, WQ_CREDIT_MAX);
    pool_changed(self, c, gen);
    pthread_mutex_unlock(&self->lock);
    PyObject *times = PyTuple_New(n);
    if (!times)
        return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *t = PyFloat_FromDouble(at[i]);
        if (!t) {
            Py_DECREF(times);
            return NULL;
        }
        PyTuple_SET_ITEM(times, i, t);
    }
    return times;
}

static PyObject *Core_lease_dry(CoreObject *self, PyObject *args) {
    PyObject *handle;
    double until;
    if (!PyArg_ParseTuple(args, "Od", &handle, &until))
        return NULL;
    wq_counter *c = leased_arg(handle);
    if (!c)
        return NULL;
    lock(self);
    uint64_t gen = c->gen;
    wq_lease_dry(c, until);
    pool_changed(self, c, gen);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *Core_lease_credit_revoke(CoreObject *self, PyObject *arg) {
    wq_counter *c = leased_arg(arg);
    if (!c)
        return NULL;
    lock(self);
    int64_t n = wq_lease_credit_revoke(c);
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromLongLong(n);
}


/* ---- handshake plans: Python's side ---------------------------------------------------------- */

_Static_assert(sizeof(struct sockaddr_storage) <= sizeof(((hp_plan *)0)->sa), "sockaddr size");

/* Free the plans no reference holds any more (with the GIL: their ctx is a Python object). */
static void plan_collect(CoreObject *self) {
    lock(self);
    hp_plan *p = self->plan_dead;
    self->plan_dead = NULL;
    pthread_mutex_unlock(&self->lock);
    while (p) {
        hp_plan *next = p->next_dead;
        Py_XDECREF((PyObject *)p->ctx);
        hp_free(p);
        p = next;
    }
}

static int sockaddr_of(const char *host, int port, struct sockaddr_storage *sa, socklen_t *len) {
    memset(sa, 0, sizeof *sa);
    struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof *v6;
    } else {
        PyErr_SetString(PyExc_ValueError, "host must be an IP address");
        return -1;
    }
    return 0;
}

static PyObject *Core_plan_add(CoreObject *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"head",   "peer",        "host",        "port",    "timeout",
                         "request", "request_key", "request_id", "answer", "answer_accept",
                         "max_message", "quotas", "expires", "ctx", NULL};
    Py_buffer head, request, answer;
    const char *peer, *host;
    int port;
    double timeout, expires;
    Py_ssize_t req_key, req_rid, ans_accept;
    unsigned long long max_message;
    PyObject *quotas, *ctx;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*ssidy*nny*nKO!dO", kw, &head, &peer, &host,
                                     &port, &timeout, &request, &req_key, &req_rid, &answer,
                                     &ans_accept, &max_message, &PyTuple_Type, &quotas, &expires,
                                     &ctx))
        return NULL;
    PyObject *result = NULL;
    hp_plan *p = calloc(1, sizeof *p);
    struct sockaddr_storage sa;
    socklen_t salen;
    size_t vs, ve, kat;
    Py_ssize_t nq = PyTuple_GET_SIZE(quotas);
    if (!p) {
        PyErr_NoMemory();
        goto out;
    }
    if (sockaddr_of(host, port, &sa, &salen) < 0)
        goto out;
    if (nq > MAX_QUOTAS || strlen(peer) >= sizeof p->peer || req_key < 0 || req_rid < 0 ||
        ans_accept < 0 || req_key + HP_KEY_LEN > request.len ||
        req_rid + HP_RID_LEN > request.len || ans_accept + HP_ACCEPT_LEN > answer.len) {
        PyErr_SetString(PyExc_ValueError, "bad plan: quotas, peer or offsets out of range");
        goto out;
    }
    if (!hp_key_span(head.buf, (size_t)head.len, &vs, &ve, &kat)) {
        result = Py_BuildValue("(KK)", 0ULL, 0ULL); /* a head no plan may serve */
        goto out;
    }
    for (Py_ssize_t i = 0; i < nq; i++) {
        const char *key;
        long long limit;
        double window;
        int stop;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(quotas, i), "sLdp", &key, &limit, &window, &stop))
            goto out;
        p->q[i].key = strdup(key);
        p->q[i].limit = limit;
        p->q[i].window = window;
        p->q[i].stop = (uint8_t)stop;
        p->nq = (int)i + 1;
        if (!p->q[i].key) {
            PyErr_NoMemory();
            goto out;
        }
    }
    p->head = malloc((size_t)head.len);
    p->req = malloc((size_t)request.len);
    p->ans = malloc((size_t)answer.len);
    if (!p->head || !p->req || !p->ans) {
        PyErr_NoMemory();
        goto out;
    }
    memcpy(p->head, head.buf, (size_t)head.len);
    p->head_len = (size_t)head.len;
    p->vs = vs;
    p->ve = ve;
    memcpy(p->req, request.buf, (size_t)request.len);
    p->req_len = (size_t)request.len;
    p->req_key = (size_t)req_key;
    p->req_rid = (size_t)req_rid;
    memcpy(p->ans, answer.buf, (size_t)answer.len);
    p->ans_len = (size_t)answer.len;
    p->ans_accept = (size_t)ans_accept;
    snprintf(p->peer, sizeof p->peer, "%s", peer);
    memcpy(p->sa, &sa, sizeof sa);
    p->salen = salen;
    p->connect_timeout = timeout;
    p->expires = expires;
    p->max_message = max_message;
    p->hash = hp_hash(p->head, p->head_len, vs, ve, p->peer);
    p->refs = 1;
    p->ctx = Py_NewRef(ctx);
    lock(self);
    p->id = ++self->next_plan;
    int err;
    hp_plan *old = hp_insert(&self->plans, p, &err);
    uint64_t id = err ? 0 : p->id, old_id = old ? old->id : 0;
    if (old)
        plan_unref(self, old);
    pthread_mutex_unlock(&self->lock);
    if (err) {
        Py_DECREF(ctx);
        p->ctx = NULL;
        PyErr_NoMemory();
        goto out;
    }
    p = NULL;
    plan_collect(self);
    result = Py_BuildValue("(KK)", (unsigned long long)id, (unsigned long long)old_id);
out:
    hp_free(p);
    PyBuffer_Release(&head);
    PyBuffer_Release(&request);
    PyBuffer_Release(&answer);
    return result;
}

static PyObject *Core_plan_drop(CoreObject *self, PyObject *arg) {
    unsigned long long id = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    lock(self);
    hp_plan *p = hp_by_id(&self->plans, id);
    int dropped = p && hp_remove(&self->plans, p);
    if (dropped)
        plan_unref(self, p);
    pthread_mutex_unlock(&self->lock);
    plan_collect(self);
    return PyBool_FromLong(dropped);
}

static PyObject *Core_plan_clear(CoreObject *self, PyObject *unused) {
    lock(self);
    size_t count = self->plans.count;
    for (size_t i = 0; i < self->plans.nslots; i++)
        while (self->plans.slots[i]) {
            hp_plan *p = self->plans.slots[i];
            hp_remove(&self->plans, p);
            plan_unref(self, p);
        }
    pthread_mutex_unlock(&self->lock);
    plan_collect(self);
    return PyLong_FromSize_t(count);
}

static PyObject *Core_plan_allow(CoreObject *self, PyObject *arg) {
    unsigned long long allow = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    atomic_store_explicit(&self->plan_allow, allow, memory_order_release);
    Py_RETURN_NONE;
}

static PyObject *Core_plan_started(CoreObject *self, PyObject *unused) {
    return PyLong_FromUnsignedLongLong(
        atomic_load_explicit(&self->plan_started, memory_order_acquire));
}

static PyObject *Core_plan_build(CoreObject *self, PyObject *args) {
    unsigned long long id;
    const char *ckey, *bkey, *rid;
    Py_ssize_t cl, bl, rl;
    if (!PyArg_ParseTuple(args, "Ky#y#y#", &id, &ckey, &cl, &bkey, &bl, &rid, &rl))
        return NULL;
    if (cl != HP_KEY_LEN || bl != HP_KEY_LEN || rl != HP_RID_LEN) {
        PyErr_SetString(PyExc_ValueError, "keys are 24 bytes, a request id 32");
        return NULL;
    }
    uint8_t *req = NULL, *ans = NULL, *expect = NULL;
    size_t req_len = 0, ans_len = 0;
    lock(self);
    hp_plan *p = hp_by_id(&self->plans, id);
    int rc = p ? plan_render(p, ckey, bkey, rid, &req, &ans, &expect) : 1;
    if (p) {
        req_len = p->req_len;
        ans_len = p->ans_len;
    }
    pthread_mutex_unlock(&self->lock);
    if (rc)
        return rc < 0 ? PyErr_NoMemory() : Py_NewRef(Py_None);
    PyObject *r = Py_BuildValue("(y#y#y#)", req, (Py_ssize_t)req_len, ans, (Py_ssize_t)ans_len,
                                expect, (Py_ssize_t)HP_ACCEPT_LEN);
    free(req);
    free(ans);
    free(expect);
    return r;
}

static PyObject *Core_stats(CoreObject *self, PyObject *unused) {
    lock(self);
    PyObject *r = Py_BuildValue(
        "{sIsKsnsIsKsKsKsKsKsnsIsK}", "live", self->nlive, "closed",
        (unsigned long long)self->closed_total, "quota_counters", (Py_ssize_t)self->quotas.count,
        "handshaking", self->nhlive, "accepted", (unsigned long long)self->accepted, "handed_back",
        (unsigned long long)self->handed_back, "fast_started",
        (unsigned long long)self->fast_started, "self_started",
        (unsigned long long)self->self_started, "planned", (unsigned long long)self->planned,
        "plans", (Py_ssize_t)self->plans.count, "held", self->nheld, "holds",
        (unsigned long long)self->holds);
    pthread_mutex_unlock(&self->lock);
    return r;
}

static PyObject *Core_sched(CoreObject *self, PyObject *unused) {
    int policy = -1;
    struct sched_param sp;
    if (self->started && pthread_getschedparam(self->thread, &policy, &sp) != 0)
        policy = -1;
    return PyUnicode_FromString(policy == SCHED_BATCH    ? "batch"
                                : policy == SCHED_OTHER ? "normal"
                                : policy < 0            ? "unknown"
                                                        : "other");
}

static PyMethodDef Core_methods[] = {
    {"sched", (PyCFunction)Core_sched, METH_NOARGS,
     "sched() -> the relay thread's scheduling policy: 'batch', 'normal', 'other' or 'unknown'."},
    {"add", (PyCFunction)(void (*)(void))Core_add, METH_VARARGS | METH_KEYWORDS,
     "add(client_fd, backend_fd, to_client, client_early, backend_early, max_message, "
     "allow_rsv, quotas) -> id. Takes both fds over (it closes them)."},
    {"terminate", (PyCFunction)Core_terminate, METH_VARARGS,
     "terminate(id, code, reason, backend_reason) -> bool (Relay.terminate)."},
    {"shutdown", (PyCFunction)Core_shutdown, METH_VARARGS,
     "shutdown(id, code, reason) -> bool (Relay.shutdown)."},
    {"abort", (PyCFunction)Core_abort, METH_VARARGS, "abort(id[, why]) -> bool."},
    {"counts", (PyCFunction)Core_counts, METH_O, "counts(id) -> 7 counters or None."},
    {"flow", (PyCFunction)Core_flow, METH_O,
     "flow(id) -> (bytes waiting for the client, for the backend, reading the client, reading "
     "the backend) or None."},
    {"scan_state", (PyCFunction)Core_scan_state, METH_O,
     "scan_state(id) -> (dropped up, dropped down, up at a boundary, down at a boundary, "
     "gated) or None."},
    {"snapshot", (PyCFunction)Core_snapshot, METH_NOARGS, "{id: 7 counters} of live ones."},
    {"events", (PyCFunction)Core_events, METH_NOARGS, "Drain the queued events."},
    {"fileno", (PyCFunction)Core_fileno, METH_NOARGS, "The eventfd that signals events."},
    {"plan_add", (PyCFunction)(void (*)(void))Core_plan_add, METH_VARARGS | METH_KEYWORDS,
     "plan_add(head, peer, host, port, timeout, request, request_key, request_id, answer, "
     "answer_accept, max_message, quotas, expires, ctx) -> (plan id or 0, id it replaced or 0)."},
    {"plan_drop", (PyCFunction)Core_plan_drop, METH_O, "plan_drop(id) -> whether it was there."},
    {"plan_clear", (PyCFunction)Core_plan_clear, METH_NOARGS, "plan_clear() -> plans dropped."},
    {"plan_allow", (PyCFunction)Core_plan_allow, METH_O,
     "plan_allow(n): the core starts planned handshakes while it started fewer than n in all "
     "(no lock)."},
    {"plan_started", (PyCFunction)Core_plan_started, METH_NOARGS,
     "plan_started() -> planned handshakes the core started in all (no lock)."},
    {"plan_build", (PyCFunction)Core_plan_build, METH_VARARGS,
     "plan_build(id, client_key, backend_key, request_id) -> (request, answer, expected "
     "accept) as a planned handshake would make them, or None."},
    {"acquire", (PyCFunction)Core_acquire, METH_VARARGS,
     "acquire(key, limit, window, now[, leased]) -> counter handle (shared quota table)."},
    {"release", (PyCFunction)Core_release, METH_VARARGS,
     "release(key, handle, now): a connection using key ended (handle None: keep the hold)."},
    {"admit", (PyCFunction)Core_admit, METH_VARARGS,
     "admit(handles, now[, hold]) -> -1 when the message passes (counted), else the first full "
     "one; with hold, -2 - i when leased counter i holds it (dry pool, window not exhausted)."},
    {"available", (PyCFunction)Core_available, METH_VARARGS, "available(handle, now)."},
    {"take", (PyCFunction)Core_take, METH_VARARGS, "take(handle, now)."},
    {"idle", (PyCFunction)Core_idle, METH_VARARGS, "idle(handle, now)."},
    {"unref", (PyCFunction)Core_unref, METH_O, "unref(handle): drop a hold from acquire()."},
    {"lease_put", (PyCFunction)Core_lease_put, METH_VARARGS,
     "lease_put(handle, slot, n, from, until, low) -> permits of another validity taken out."},
    {"lease_take_back", (PyCFunction)Core_lease_take_back, METH_VARARGS,
     "lease_take_back(handle, slot) -> the permits that were left in the slot."},
    {"lease_state", (PyCFunction)Core_lease_state, METH_O,
     "lease_state(handle) -> ((n, from, until) x 3 slots, used, refused, credit allowance, "
     "credit admissions not collected, holds, dry until)."},
    {"lease_dry", (PyCFunction)Core_lease_dry, METH_VARARGS,
     "lease_dry(handle, until): no room in the window: a message without a permit or credit is "
     "refused while now < until, held (the side not read) until the pool changes otherwise."},
    {"lease_credit", (PyCFunction)Core_lease_credit, METH_VARARGS,
     "lease_credit(handle, add) -> times of the admissions on credit since the last call "
     "(collected); the allowance grows by add."},
    {"lease_credit_revoke", (PyCFunction)Core_lease_credit_revoke, METH_O,
     "lease_credit_revoke(handle) -> the credit allowance not used (withdrawn)."},
    {"stats", (PyCFunction)Core_stats, METH_NOARGS, "{live, closed, quota_counters}."},
    {"close", (PyCFunction)Core_close, METH_NOARGS, "Stop the thread; close every socket."},
    {"listen", (PyCFunction)Core_listen, METH_VARARGS,
     "listen(fd, max_head, head_timeout): accept on the listening socket fd (the core owns "
     "it); each request head (or max_head bytes without one) is reported as (EV_HEAD, hid, "
     "peer_ip, bytes); a head not complete in head_timeout as (EV_HS_END, hid, 1)."},
    {"unlisten", (PyCFunction)Core_unlisten, METH_NOARGS, "Stop accepting; close the listener."},
    {"handback", (PyCFunction)Core_handback, METH_O,
     "handback(hid) -> (fd, bytes read) or None: the client socket back to Python."},
    {"reply", (PyCFunction)Core_reply, METH_VARARGS,
     "reply(hid, data) -> bool: send data to the client, then close (the backend too)."},
    {"connect", (PyCFunction)Core_connect, METH_VARARGS,
     "connect(hid, ip, port, request, head_len, timeout[, expect, answer, max_message, quotas]) "
     "-> bool: open the backend, send request, report its response head as (EV_UPSTREAM, hid, "
     "error, errno, head); with expect (the backend's Sec-WebSocket-Accept), a plain 101 is "
     "answered with answer and relayed at once instead, reported as (EV_STARTED, hid, id)."},
    {"start", (PyCFunction)(void (*)(void))Core_start, METH_VARARGS | METH_KEYWORDS,
     "start(hid, to_client, max_message, allow_rsv, quotas) -> relay id or None: relay both "
     "sockets of a handshake (as add(), the early bytes are the core's)."},
    {NULL}};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "router._core.Core",
    .tp_basicsize = sizeof(CoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Core(sched='normal'): the relay core, one epoll thread relaying handed-over "
              "connections; sched: its thread's policy, 'normal', 'batch' (SCHED_BATCH) or "
              "'auto' (batch while many connections are active; see start_thread).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
};

/* plain_101 for the tests (router/_core.pyi), checked against router.http11's judgement. */
static PyObject *mod_plain_101(PyObject *unused, PyObject *args) {
    Py_buffer head, accept;
    if (!PyArg_ParseTuple(args, "y*y*", &head, &accept))
        return NULL;
    int ok = plain_101(head.buf, (size_t)head.len, accept.buf, (size_t)accept.len);
    PyBuffer_Release(&head);
    PyBuffer_Release(&accept);
    return PyBool_FromLong(ok);
}

static PyObject *mod_key_span(PyObject *unused, PyObject *arg) {
    Py_buffer head;
    if (PyObject_GetBuffer(arg, &head, PyBUF_SIMPLE) < 0)
        return NULL;
    size_t vs, ve, key;
    int ok = hp_key_span(head.buf, (size_t)head.len, &vs, &ve, &key);
    PyBuffer_Release(&head);
    if (!ok)
        Py_RETURN_NONE;
    return Py_BuildValue("(nnn)", (Py_ssize_t)vs, (Py_ssize_t)ve, (Py_ssize_t)key);
}

static PyMethodDef core_functions[] = {
    {"plain_101", mod_plain_101, METH_VARARGS,
     "plain_101(head, accept) -> bool: whether the core starts a relay on this backend answer."},
    {"key_span", mod_key_span, METH_O,
     "key_span(head) -> (value start, value end, key start) of its one Sec-WebSocket-Key, or "
     "None when no plan may serve the head (plan.c hp_key_span)."},
    {NULL}};

int core_module_init(PyObject *module) {
    if (PyType_Ready(&CoreType) < 0 || PyModule_AddFunctions(module, core_functions) < 0)
        return -1;
    PyObject *hold_max = PyFloat_FromDouble(HOLD_MAX);
    if (!hold_max || PyModule_AddObject(module, "HOLD_MAX", hold_max) < 0) {
        Py_XDECREF(hold_max);
        return -1;
    }
    return PyModule_AddObjectRef(module, "Core", (PyObject *)&CoreType);
}
