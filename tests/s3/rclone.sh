#!/usr/bin/env bash
# rclone against cairn's S3 API, for real (driven by tests/s3_clients.rs).
#
#   rclone.sh WORKDIR
#
# The remote `cairn:` comes from the environment (RCLONE_CONFIG_CAIRN_TYPE=s3,
# _PROVIDER=Other, _ENDPOINT, keys, region, path style). Files of 6 MiB and more
# go up in 5 MiB parts, so rclone's multipart path (and the MD5 it keeps in
# X-Amz-Meta-Md5chksum, since a multipart ETag is no MD5) is exercised too. Prints
# "ok <check>" per check and stops at the first failure with "FAIL <check>: <why>".
set -euo pipefail

work=$1
rc() {
  rclone --retries 1 --low-level-retries 2 --contimeout 10s --timeout 60s \
    --s3-upload-cutoff 6M --s3-chunk-size 5M "$@"
}
ok() { echo "ok $*"; }
fail() {
  echo "FAIL $*"
  exit 1
}

cd "$work"
rclone version | sed -n 1p

mkdir -p src/sub/deep
echo alpha >src/a.txt
echo beta >src/sub/b.txt
head -c 200000 /dev/urandom >src/sub/deep/c.bin
head -c $((12 * 1024 * 1024 + 3)) /dev/urandom >src/big.bin # 3 parts

rc mkdir cairn:rclone
rc copy src cairn:rclone/tree
ok copy

listing=$(rc ls cairn:rclone/tree)
for f in "6 a.txt" "5 sub/b.txt" "200000 sub/deep/c.bin" "$((12 * 1024 * 1024 + 3)) big.bin"; do
  grep -Eq "^ *$f\$" <<<"$listing" || fail "ls: no '$f' in: $listing"
done
[ "$(echo "$listing" | wc -l)" = 4 ] || fail "ls: $listing"
ok ls

# The remote's MD5s are the files' (a single PUT's ETag, the multipart one's
# metadata), and check compares them.
remote=$(rc md5sum cairn:rclone/tree | sort -k2)
here=$(cd src && find . -type f | sed 's|^\./||' | sort | xargs md5sum | sort -k2)
[ "$remote" = "$here" ] || fail "md5sum: remote
$remote
local
$here"
rc check src cairn:rclone/tree 2>check.log || fail "check: $(cat check.log)"
grep -q "0 differences found" check.log || fail "check: $(cat check.log)"
grep -q "4 matching files" check.log || fail "check: $(cat check.log)"
if grep -q "hashes could not be checked" check.log; then fail "check: hashes not compared: $(cat check.log)"; fi
ok check

# Same size, other bytes: only the hash can tell, and check must.
printf 'ALPHA\n' >src/a.txt
if rc check src cairn:rclone/tree 2>check.log; then fail "check: a changed file passed: $(cat check.log)"; fi
grep -q "1 differences found" check.log || fail "check after a change: $(cat check.log)"
grep -q "a.txt" check.log || fail "check does not name the changed file: $(cat check.log)"
ok check_finds_a_changed_file

# sync: the change, a new file and a removed one.
echo gamma >src/sub/new.txt
rm src/sub/b.txt
rc sync src cairn:rclone/tree
rc check src cairn:rclone/tree 2>check.log || fail "check after sync: $(cat check.log)"
listing=$(rc ls cairn:rclone/tree)
if grep -q "sub/b.txt" <<<"$listing"; then fail "sync left sub/b.txt: $listing"; fi
grep -q "sub/new.txt" <<<"$listing" || fail "sync did not add sub/new.txt: $listing"
ok sync

# And back down.
rc copy cairn:rclone/tree back
diff -r src back || fail "copy back: the tree differs"
ok copy_back
