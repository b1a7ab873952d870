#!/usr/bin/env bash
# aws-cli against cairn's S3 API, for real (driven by tests/s3_clients.rs).
#
#   aws_cli.sh ENDPOINT WORKDIR
#
# Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, region from
# AWS_DEFAULT_REGION; $AWS is the command to run (default `aws`; `python3 -m awscli`
# for a --target install). Prints "ok <check>" per check and stops at the first
# failure with "FAIL <check>: <why>" and a non-zero exit.
set -euo pipefail

endpoint=$1
work=$2
read -r -a aws <<<"${AWS:-aws}"

s3() { "${aws[@]}" --endpoint-url "$endpoint" s3 "$@"; }
s3api() { "${aws[@]}" --endpoint-url "$endpoint" --output text s3api "$@"; }
ok() { echo "ok $*"; }
fail() {
  echo "FAIL $*"
  exit 1
}
same() { # file file check
  cmp -s "$1" "$2" || fail "$3: $1 and $2 differ"
}

cd "$work"
"${aws[@]}" --version

# -- a bucket
s3 mb s3://cli >/dev/null
buckets=$(s3 ls)
grep -qw cli <<<"$buckets" || fail "mb: s3 ls does not list the bucket: $buckets"
ok mb_and_ls_buckets

# -- cp up and down, below the multipart threshold
head -c 1048583 /dev/urandom >small.bin
s3 cp small.bin s3://cli/small.bin --content-type text/x-small --metadata origin=cli >/dev/null
s3 cp s3://cli/small.bin small.back >/dev/null
same small.bin small.back cp_small
etag=$(s3api head-object --bucket cli --key small.bin --query ETag)
[ "$etag" = "\"$(md5sum small.bin | cut -d' ' -f1)\"" ] || fail "cp_small: ETag $etag is not the MD5"
meta=$(s3api head-object --bucket cli --key small.bin --query '[ContentType, Metadata.origin]')
[ "$meta" = "$(printf 'text/x-small\tcli')" ] || fail "cp_small: attributes $meta"
ok cp_small

# -- cp above the multipart threshold (8 MiB parts: 3 of them)
head -c $((20 * 1024 * 1024 + 5)) /dev/urandom >big.bin
s3 cp big.bin s3://cli/dir/big.bin >/dev/null
etag=$(s3api head-object --bucket cli --key dir/big.bin --query ETag)
[[ "$etag" == *'-3"' ]] || fail "cp_multipart: ETag $etag is not a 3-part multipart ETag"
s3 cp s3://cli/dir/big.bin big.back >/dev/null
same big.bin big.back cp_multipart
ok cp_multipart

# -- ls
listing=$(s3 ls s3://cli/)
grep -Eq '^ +PRE dir/$' <<<"$listing" || fail "ls: no dir/ prefix in: $listing"
grep -Eq ' 1048583 small\.bin$' <<<"$listing" || fail "ls: no small.bin in: $listing"
listing=$(s3 ls --recursive s3://cli/)
grep -Eq " $((20 * 1024 * 1024 + 5)) dir/big\.bin$" <<<"$listing" || fail "ls --recursive: $listing"
ok ls

# -- sync a tree up, back down, change it, and sync again
mkdir -p tree/sub/deep
echo alpha >tree/a.txt
echo beta >tree/sub/b.txt
head -c 300000 /dev/urandom >tree/sub/deep/c.bin
: >tree/empty
# Older than any upload: sync compares sizes and times (a file written in the
# second of its upload would look newer than its copy).
find tree -type f -exec touch -d '2020-01-01 00:00:00' {} +
s3 sync tree s3://cli/tree/ >/dev/null
s3 sync s3://cli/tree/ back >/dev/null
diff -r tree back || fail "sync: the tree came back different"
again=$(s3 sync --no-progress tree s3://cli/tree/)
[ -z "$again" ] || fail "sync: a second sync of an unchanged tree copied: $again"
echo gamma >tree/sub/new.txt
echo changed-alpha >tree/a.txt
rm tree/sub/b.txt
s3 sync --delete tree s3://cli/tree/ >/dev/null
s3 sync --delete s3://cli/tree/ back >/dev/null
diff -r tree back || fail "sync --delete: the tree came back different"
ok sync

# -- versions: two PUTs of one key
echo v2 >v2.txt
s3 cp v2.txt s3://cli/small.bin >/dev/null
count=$(s3api list-object-versions --bucket cli --prefix small.bin --query 'length(Versions)')
[ "$count" = 2 ] || fail "list-object-versions: $count versions of small.bin, want 2"
latest=$(s3api list-object-versions --bucket cli --prefix small.bin --query 'Versions[?IsLatest].Size')
[ "$latest" = 3 ] || fail "list-object-versions: latest size $latest"
ok list_object_versions

# -- multipart by hand
head -c $((5 * 1024 * 1024)) /dev/urandom >part1
echo last part >part2
upload=$(s3api create-multipart-upload --bucket cli --key handmade --query UploadId)
e1=$(s3api upload-part --bucket cli --key handmade --upload-id "$upload" --part-number 1 --body part1 --query ETag)
e2=$(s3api upload-part --bucket cli --key handmade --upload-id "$upload" --part-number 2 --body part2 --query ETag)
printf '{"Parts":[{"PartNumber":1,"ETag":%s},{"PartNumber":2,"ETag":%s}]}' \
  "$(printf '%s' "$e1" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" \
  "$(printf '%s' "$e2" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" >parts.json
s3api complete-multipart-upload --bucket cli --key handmade --upload-id "$upload" \
  --multipart-upload file://parts.json >/dev/null
s3 cp s3://cli/handmade handmade.back >/dev/null
cat part1 part2 >handmade
same handmade handmade.back multipart_by_hand
ok multipart_by_hand

# -- rm --recursive
s3 rm --recursive s3://cli/tree/ >/dev/null
count=$(s3api list-objects-v2 --no-paginate --bucket cli --prefix tree/ --query KeyCount)
[ "$count" = 0 ] || fail "rm --recursive: $count keys left under tree/"
listing=$(s3 ls s3://cli/)
grep -q small.bin <<<"$listing" || fail "rm --recursive: removed more than tree/: $listing"
ok rm_recursive

# -- a bucket that holds versions is not removed
if out=$(s3 rb s3://cli 2>&1); then fail "rb: a bucket with objects was removed"; fi
grep -q BucketNotEmpty <<<"$out" || fail "rb: $out"
ok rb_refuses_a_full_bucket
