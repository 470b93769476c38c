// manyfiles.wasm: creates empty files in its scratch space (/tmp, or the
// directory named by its first argument) until creating one fails or, with
// a second argument, that many exist; says how many and why it stopped;
// then tries a directory, a symbolic link and a hard link, removes a file
// and creates one again, saying what each got. Exits 0. Shows the bound on
// the number of files of scratch space (docs/storage.md).
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

static const char *dir;

static void say(const char *what, int ok) {
	printf("%s: %s\n", what, ok ? "ok" : strerror(errno));
}

static int create(long i) {
	char path[256];
	snprintf(path, sizeof path, "%s/f%ld", dir, i);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

int main(int argc, char **argv) {
	dir = argc > 1 ? argv[1] : "/tmp";
	long most = argc > 2 ? atol(argv[2]) : -1;
	long n = 0;
	int err = 0;
	while (most < 0 || n < most) {
		if (!create(n)) {
			err = errno;
			break;
		}
		n++;
	}
	if (err)
		printf("made %ld files: %s\n", n, strerror(err));
	else
		printf("made %ld files\n", n);
	char path[256], target[256];
	snprintf(path, sizeof path, "%s/d", dir);
	say("mkdir", mkdir(path, 0755) == 0);
	snprintf(path, sizeof path, "%s/l", dir);
	say("symlink", symlink("f0", path) == 0);
	snprintf(path, sizeof path, "%s/h", dir);
	snprintf(target, sizeof target, "%s/f0", dir);
	say("link", link(target, path) == 0);
	snprintf(path, sizeof path, "%s/f0", dir);
	say("unlink", unlink(path) == 0);
	say("create again", create(0));
	fflush(stdout);
	return 0;
}
