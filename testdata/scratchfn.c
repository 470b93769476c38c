// scratchfn.wasm: an HTTP function (CGI over WASI) that uses its
// request's scratch space (`deploy --route /s --scratch SIZE`): it says
// whether /tmp/mark, which it then writes, was there already (it never
// is: each request has a /tmp of its own), writes the number of bytes
// given as the query string (?N, default 0) to /tmp/fill 64 KiB at a
// time until a write fails, and answers how far it got and why.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
	const char *q = getenv("QUERY_STRING");
	long long most = q && *q ? atoll(q) : 0;
	printf("Content-Type: text/plain\n\n");
	printf("mark: %s\n", access("/tmp/mark", F_OK) == 0 ? "there" : "absent");
	int m = open("/tmp/mark", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (m < 0) {
		printf("open /tmp/mark: %s\n", strerror(errno));
		return 0;
	}
	close(m);
	static char buf[65536];
	memset(buf, 'x', sizeof buf);
	int fd = open("/tmp/fill", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		printf("open /tmp/fill: %s\n", strerror(errno));
		return 0;
	}
	long long total = 0;
	int err = 0;
	while (total < most) {
		size_t n = sizeof buf;
		if ((long long)n > most - total)
			n = (size_t)(most - total);
		ssize_t w = write(fd, buf, n);
		if (w < 0) {
			err = errno;
			break;
		}
		total += w;
	}
	close(fd);
	if (err)
		printf("wrote %lld bytes: %s\n", total, strerror(err));
	else
		printf("wrote %lld bytes\n", total);
	return 0;
}
