// cserver: an HTTP/1.1 server in C (wasi-libc) on the listener the host
// preopens, a Wasm service (deploy cserver.wasm --port 8080 --route /c):
// it accepts one connection at a time on $LISTEN_FD (3 by default), reads
// the request head and body, and answers "hello from c: METHOD PATH" and
// the body's length, closing the connection. GET .../healthz answers "ok".
// With the argument "never" it never accepts: it prints "not accepting"
// and sleeps, which the worker reports as not ready.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int write_all(int fd, const char *p, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void serve(int c) {
	static char buf[16384];
	size_t n = 0;
	char *end = NULL;
	while (n < sizeof buf - 1) {
		ssize_t r = read(c, buf + n, sizeof buf - 1 - n);
		if (r <= 0)
			return;
		n += (size_t)r;
		buf[n] = 0;
		if ((end = strstr(buf, "\r\n\r\n")) != NULL)
			break;
	}
	if (end == NULL)
		return;
	long length = 0;
	for (char *h = strstr(buf, "\r\n"); h != NULL && h < end; h = strstr(h + 2, "\r\n")) {
		if (strncasecmp(h + 2, "Content-Length:", 15) == 0)
			length = strtol(h + 17, NULL, 10);
	}
	size_t have = n - (size_t)(end + 4 - buf);
	while ((long)have < length) {
		char skip[4096];
		ssize_t r = read(c, skip, sizeof skip);
		if (r <= 0)
			return;
		have += (size_t)r;
	}
	char method[16] = "", path[1024] = "";
	sscanf(buf, "%15s %1023s", method, path);
	char *query = strchr(path, '?');
	if (query != NULL)
		*query = 0;
	char body[1200];
	const char *healthz = strstr(path, "/healthz");
	if (healthz != NULL && healthz[8] == 0)
		snprintf(body, sizeof body, "ok\n");
	else
		snprintf(body, sizeof body, "hello from c: %s %s (%ld bytes)\n", method, path, length);
	char head[256];
	int hn = snprintf(head, sizeof head,
	                  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
	                  strlen(body));
	if (write_all(c, head, (size_t)hn) == 0)
		write_all(c, body, strlen(body));
}

int main(int argc, char **argv) {
	int lfd = 3;
	const char *env = getenv("LISTEN_FD");
	if (env != NULL)
		lfd = atoi(env);
	if (argc > 1 && strcmp(argv[1], "never") == 0) {
		printf("not accepting\n");
		fflush(stdout);
		for (;;)
			sleep(3600);
	}
	const char *port = getenv("PORT");
	printf("cserver: accepting on fd %d (port %s)\n", lfd, port ? port : "unset");
	fflush(stdout);
	for (;;) {
		int c = accept(lfd, NULL, NULL);
		if (c < 0) {
			perror("accept");
			return 1;
		}
		serve(c);
		shutdown(c, SHUT_WR);
		close(c);
	}
}
