/* Open-loop HTTP/1.1 load generator: requests start on a fixed schedule, whatever the answers do.
 *
 * Compiled and run by bench/open_loop.py, which documents what it measures. Usage:
 *   wgs-open-loop HOST PORT RATE COUNT MAX_SECONDS WARM MAX_CONNECTIONS < request
 * HOST is an IPv4 address; the request's bytes (one whole HTTP/1.1 request) come on stdin.
 * Request i is due at start + i / RATE. It goes out at that time on an idle keep-alive
 * connection, or on a new one; when MAX_CONNECTIONS are busy it fails. Its latency counts from
 * when it was due, so lateness of the generator itself counts against the server. An answer
 * counts when it is an HTTP/1.1 response with a Content-Length and a status below 300; any
 * other answer, a connection lost with a request in flight, or no answer within MAX_SECONDS
 * after the last request was due, is a failure. WARM connections are opened before the first
 * request is due. Prints on stdout {"failed": N, "failures": {...}, "latencies_ns": [...]}, the
 * failures by kind: "statuses" (answers of status 300 or more, by status), "lost" (the connection
 * closed or reset with a request in flight), "bad_answers" (not an HTTP/1.1 answer with a
 * Content-Length, too large, or not asked for), "no_connection" (every connection busy, or none
 * could be opened) and "unanswered" (still in flight at the deadline).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ANSWER_BYTES 16384 /* an answer of this size or more is a failure */
#define MAX_REQUEST_BYTES 65536
#define EVENTS_PER_WAIT 64

typedef struct {
    int fd;
    int64_t due; /* when its request in flight was due (ns); -1 while idle */
    size_t used;
    char buffer[ANSWER_BYTES];
} connection;

static struct sockaddr_in server;
static int epoll_fd;
static connection **open_connections; /* every open connection */
static int open_count, max_connections;
static connection **idle; /* a stack: the connection used last is used next */
static int idle_count;
static int64_t *latencies;
static long completed, in_flight;
static long lost, bad_answers, no_connection, unanswered;
static long statuses[600]; /* failed answers by status (300-599; others count as 599) */

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A new keep-alive connection (blocking connect: loopback), or NULL when none may or can be opened. */
static connection *connect_one(void) {
    if (open_count >= max_connections) return NULL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    int one = 1;
    if (connect(fd, (struct sockaddr *)&server, sizeof server) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        close(fd);
        return NULL;
    }
    connection *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->due = -1;
    struct epoll_event event = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0) {
        close(fd);
        free(c);
        return NULL;
    }
    open_connections[open_count++] = c;
    return c;
}

/* Close a connection; its request in flight, if any, failed and counts in `*kind`. */
static void drop(connection *c, long *kind) {
    if (c->due >= 0) {
        (*kind)++;
        in_flight--;
    }
    for (int i = 0; i < idle_count; i++)
        if (idle[i] == c) {
            idle[i] = idle[--idle_count];
            break;
        }
    for (int i = 0; i < open_count; i++)
        if (open_connections[i] == c) {
            open_connections[i] = open_connections[--open_count];
            break;
        }
    close(c->fd);
    free(c);
}

/* Bytes of the first whole response in the buffer and its status; -1 while incomplete,
 * -2 for what is not an HTTP/1.1 response with a Content-Length. */
static long parse_response(const char *buffer, size_t used, int *status) {
    const char *head_end = memmem(buffer, used, "\r\n\r\n", 4);
    if (head_end == NULL) return -1;
    if (head_end - buffer < 12 || strncasecmp(buffer, "HTTP/1.1 ", 9) != 0) return -2;
    *status = atoi(buffer + 9);
    if (*status < 100) return -2;
    long length = -1;
    for (const char *line = buffer; line < head_end;) {
        const char *line_end = memmem(line, head_end + 2 - line, "\r\n", 2);
        if (line_end - line > 15 && strncasecmp(line, "content-length:", 15) == 0) length = atol(line + 15);
        line = line_end + 2;
    }
    if (length < 0) return -2;
    long total = (head_end - buffer) + 4 + length;
    return (size_t)total <= used ? total : -1;
}

static void readable(connection *c, int64_t now) {
    ssize_t got = read(c->fd, c->buffer + c->used, ANSWER_BYTES - c->used);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(c, &lost);
        return;
    }
    if (got > 0) c->used += got;
    int status = 0;
    long taken = parse_response(c->buffer, c->used, &status);
    if (taken == -1) {
        if (c->used == ANSWER_BYTES) drop(c, &bad_answers);
        return;
    }
    if (taken == -2 || c->due < 0 || (size_t)taken != c->used) { /* not HTTP, or not asked for */
        drop(c, &bad_answers);
        return;
    }
    if (status < 300)
        latencies[completed++] = now - c->due;
    else
        statuses[status < 600 ? status : 599]++;
    in_flight--;
    c->due = -1;
    c->used = 0;
    idle[idle_count++] = c;
}

/* Handle the answers that arrive until `until` (at least those already there). */
static void wait_for_answers(int64_t until) {
    struct epoll_event events[EVENTS_PER_WAIT];
    int64_t wait = until - now_ns();
    struct timespec timeout = {0, 0};
    if (wait > 0) {
        timeout.tv_sec = wait / 1000000000;
        timeout.tv_nsec = wait % 1000000000;
    }
    int n = epoll_pwait2(epoll_fd, events, EVENTS_PER_WAIT, &timeout, NULL);
    int64_t now = now_ns();
    for (int i = 0; i < n; i++) readable(events[i].data.ptr, now);
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT RATE COUNT MAX_SECONDS WARM MAX_CONNECTIONS < request\n", argv[0]);
        return 2;
    }
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)atoi(argv[2]));
    double rate = atof(argv[3]);
    long count = atol(argv[4]);
    double max_seconds = atof(argv[5]);
    int warm = atoi(argv[6]);
    max_connections = atoi(argv[7]);
    static char request[MAX_REQUEST_BYTES];
    size_t request_bytes = fread(request, 1, sizeof request, stdin);
    if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1 || rate <= 0 || count <= 0 || max_seconds <= 0 ||
        warm < 0 || max_connections < warm || max_connections < 1 || request_bytes == 0 ||
        request_bytes == sizeof request) {
        fprintf(stderr, "invalid arguments, or a request that is empty or over %d bytes\n", MAX_REQUEST_BYTES - 1);
        return 2;
    }
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    open_connections = calloc(max_connections, sizeof *open_connections);
    idle = calloc(max_connections, sizeof *idle);
    latencies = calloc(count, sizeof *latencies);
    if (epoll_fd < 0 || open_connections == NULL || idle == NULL || latencies == NULL) {
        perror("setup");
        return 1;
    }
    for (int i = 0; i < warm; i++) {
        connection *c = connect_one();
        if (c == NULL) {
            fprintf(stderr, "cannot connect to %s:%s\n", argv[1], argv[2]);
            return 1;
        }
        idle[idle_count++] = c;
    }
    int64_t start = now_ns();
    for (long i = 0; i < count; i++) {
        int64_t due = start + (int64_t)((double)i * 1e9 / rate);
        do wait_for_answers(due);
        while (now_ns() < due);
        connection *c = idle_count ? idle[--idle_count] : connect_one();
        if (c == NULL) {
            no_connection++;
            continue;
        }
        c->due = due;
        in_flight++;
        /* MSG_NOSIGNAL: a connection the server closed meanwhile fails its request, not the generator. */
        if (send(c->fd, request, request_bytes, MSG_NOSIGNAL) != (ssize_t)request_bytes) drop(c, &lost);
    }
    int64_t deadline = now_ns() + (int64_t)(max_seconds * 1e9);
    while (in_flight > 0 && now_ns() < deadline) wait_for_answers(deadline);
    unanswered = in_flight;
    long refused = 0;
    for (int status = 300; status < 600; status++) refused += statuses[status];
    printf("{\"failed\": %ld, \"failures\": {\"statuses\": {", refused + lost + bad_answers + no_connection + unanswered);
    for (int status = 300, first = 1; status < 600; status++)
        if (statuses[status]) {
            printf(first ? "\"%d\": %ld" : ", \"%d\": %ld", status, statuses[status]);
            first = 0;
        }
    printf("}, \"lost\": %ld, \"bad_answers\": %ld, \"no_connection\": %ld, \"unanswered\": %ld}", lost, bad_answers,
           no_connection, unanswered);
    printf(", \"latencies_ns\": [");
    for (long i = 0; i < completed; i++) printf(i ? ", %ld" : "%ld", (long)latencies[i]);
    printf("]}\n");
    return 0;
}
