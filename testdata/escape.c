// escape.wasm: tries to leave a writable directory it was given (/tmp, or
// the directory named by its argument) through a symbolic link it creates,
// relative ("../../../../../../../..") and absolute ("/"), then to read
// etc/hostname of what the link points to. Prints what each step got and
// exits 0. Shows that a writable mount keeps its links inside: the relative
// link is made but leads nowhere (EPERM), the absolute one is refused.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void try(const char *dir, const char *name, const char *target) {
	char link[256], path[300];
	snprintf(link, sizeof link, "%s/%s", dir, name);
	if (symlink(target, link) != 0) {
		printf("symlink %s: %s\n", link, strerror(errno));
	} else {
		printf("symlink %s: made\n", link);
	}
	snprintf(path, sizeof path, "%s/etc/hostname", link);
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		printf("open %s: %s\n", path, strerror(errno));
		return;
	}
	char buf[128] = {0};
	fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	printf("open %s: read the host's file\n", path);
}

int main(int argc, char **argv) {
	const char *dir = argc > 1 ? argv[1] : "/tmp";
	try(dir, "up", "../../../../../../../..");
	try(dir, "root", "/");
	return 0;
}
