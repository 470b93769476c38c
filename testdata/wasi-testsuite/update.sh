#!/bin/sh
# Refreshes the vendored WASI preview-1 file-system tests from a checkout of
# https://github.com/WebAssembly/wasi-testsuite (branch prod/testsuite-base,
# where its CI commits the prebuilt test binaries):
#
#   git clone -b prod/testsuite-base https://github.com/WebAssembly/wasi-testsuite /tmp/wts
#   testdata/wasi-testsuite/update.sh /tmp/wts
#
# It takes, for the C and Rust suites, every test whose .json spec mounts a
# directory ("root"), and the C test fopen-with-no-access (opening a file
# without a preopened directory), with the spec, the suite's manifest and the
# fixture directory; strips the binaries' custom sections (DWARF, names) with
# wabt's wasm-strip, which leaves their code as it is; and records the commit.
set -eu
src=${1:?usage: update.sh WASI-TESTSUITE-CHECKOUT}
here=$(cd "$(dirname "$0")" && pwd)
commit=$(git -C "$src" rev-parse HEAD)
for lang in c rust; do
	from=$src/tests/$lang/testsuite/wasm32-wasip1
	to=$here/$lang
	rm -rf "$to"
	mkdir -p "$to"
	cp "$from/manifest.json" "$to/"
	cp -R "$from/fs-tests.dir" "$to/"
	for spec in "$from"/*.json; do
		name=$(basename "$spec" .json)
		[ "$name" = manifest ] && continue
		grep -q '"root"' "$spec" || continue
		cp "$spec" "$from/$name.wasm" "$to/"
	done
	if [ "$lang" = c ]; then
		cp "$from/fopen-with-no-access.wasm" "$to/"
	fi
	for wasm in "$to"/*.wasm; do
		wasm-strip "$wasm"
		chmod 0644 "$wasm"
	done
done
cp "$src/LICENSE" "$here/LICENSE"
echo "$commit" > "$here/COMMIT"
echo "vendored wasi-testsuite $commit"
