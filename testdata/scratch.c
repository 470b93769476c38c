// scratch.wasm: fills a file in its scratch space (/tmp, `deploy
// --scratch`) 64 KiB at a time until a write fails, then says how far it
// got and why, and stays running (printing "alive N" every second) so that
// its state can be looked at. With an argument, writes that many bytes at
// most: `scratch.wasm 1000000`.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

int main(int argc, char **argv) {
	long long most = argc > 1 ? atoll(argv[1]) : -1;
	static char buf[65536];
	memset(buf, 'x', sizeof buf);
	int fd = open("/tmp/fill", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		printf("open /tmp/fill: %s\n", strerror(errno));
		return 1;
	}
	long long total = 0;
	int err = 0;
	while (most < 0 || total < most) {
		size_t n = sizeof buf;
		if (most >= 0 && (long long)n > most - total)
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
		printf("wrote %lld bytes to /tmp/fill: %s\n", total, strerror(err));
	else
		printf("wrote %lld bytes to /tmp/fill\n", total);
	fflush(stdout);
	for (long i = 1;; i++) {
		sleep(1);
		printf("alive %ld\n", i);
		fflush(stdout);
	}
}
