// volcounter.wasm: counts how often it has started in a file of its named
// volume (`deploy --volume data:/data`): reads /data/count (DIR/count with
// an argument DIR), adds one, writes it back (to a new file renamed over
// the old, so that a kill mid-write loses nothing), prints "count N" and
// stays running. A restart, a rollout or a worker killed with -9 starts it
// again, and it prints the next number.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
	const char *dir = argc > 1 ? argv[1] : "/data";
	char path[256], tmp[256];
	snprintf(path, sizeof path, "%s/count", dir);
	snprintf(tmp, sizeof tmp, "%s/count.tmp", dir);
	long n = 0;
	FILE *f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%ld", &n) != 1)
			n = 0;
		fclose(f);
	} else if (errno != ENOENT) {
		printf("open %s: %s\n", path, strerror(errno));
		return 1;
	}
	n++;
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%ld\n", n) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
		printf("write %s: %s\n", path, strerror(errno));
		return 1;
	}
	printf("count %ld\n", n);
	fflush(stdout);
	for (;;)
		sleep(60);
}
