#!/usr/bin/env bash
# Renders the chart (deploy/chart) into the plain manifests (deploy/kubernetes), so that the two
# can never disagree:
#
#   deploy/kubernetes/*.yaml                  helm template swoll deploy/chart --namespace swoll
#   deploy/kubernetes/monitoring/*.yaml       the same with --set serviceMonitor.enabled=true,
#                                             only templates/servicemonitor.yaml (needs the
#                                             Prometheus operator's CRDs, hence its own folder)
#
# Usage: deploy/render.sh [--install] [DIR]     (DIR defaults to deploy/kubernetes)
#        deploy/render.sh [--install] --set KEY=VALUE... DIR
#            the chart with these values (booleans and strings) into DIR, without the
#            monitoring folder: what a user's `helm install --set` gives, e.g. for the kernel
#            tests, which run the agent as the rendered DaemonSet says (tests/kernel)
#
# Helm's own template engine renders, through the first of:
#   1. a `helm` binary on PATH;
#   2. the helm-python-sdk package (Helm's Go SDK as a C library, from PyPI), importable by the
#      Python of $SWOLL_HELM_VENV (default ~/.cache/swoll/helm-venv) or by python3;
#   3. with --install: helm-python-sdk installed into $SWOLL_HELM_VENV first (a 75 MB wheel).
# Without any of them it exits 3 and changes nothing. The *.yaml files of DIR and DIR/monitoring
# are replaced: nothing but rendered files belongs there.
set -euo pipefail

HELM_PYTHON_SDK=helm-python-sdk==0.2.2
release=swoll
namespace=swoll

install=0
out=""
sets=()
while (($#)); do
	case "$1" in
	--install) install=1 ;;
	--set)
		(($# > 1)) || { echo "render.sh: --set takes KEY=VALUE" >&2; exit 2; }
		sets+=("$2")
		shift
		;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	-*) echo "render.sh: unknown option $1" >&2; exit 2 ;;
	*) out=$1 ;;
	esac
	shift
done
if ((${#sets[@]})) && [[ -z $out ]]; then
	echo "render.sh: --set needs a DIR (deploy/kubernetes holds the default rendering only)" >&2
	exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
chart=$here/chart
out=${out:-$here/kubernetes}
venv=${SWOLL_HELM_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/swoll/helm-venv}

has_sdk() { [[ -x $1 ]] || command -v "$1" >/dev/null 2>&1 && "$1" -c 'import helm_python' 2>/dev/null; }

renderer=""
if command -v helm >/dev/null 2>&1; then
	renderer=helm
elif has_sdk "$venv/bin/python"; then
	renderer=$venv/bin/python
elif has_sdk python3; then
	renderer=python3
elif ((install)); then
	echo "render.sh: installing $HELM_PYTHON_SDK into $venv" >&2
	python3 -m venv "$venv"
	"$venv/bin/pip" install --quiet --disable-pip-version-check "$HELM_PYTHON_SDK"
	renderer=$venv/bin/python
else
	echo "render.sh: no Helm here: neither a helm binary on PATH nor helm-python-sdk" \
		"(run with --install to install $HELM_PYTHON_SDK into $venv)" >&2
	exit 3
fi

# Renders the chart with `--set`-style overrides ($2…, key=value, booleans only) as a stream in
# `helm template`'s format (`---`, `# Source: chart/templates/x.yaml`, the object) into $1.
render() {
	local dest=$1
	shift
	if [[ $renderer == helm ]]; then
		local sets=()
		for s in "$@"; do sets+=(--set "$s"); done
		helm template "$release" "$chart" --namespace "$namespace" "${sets[@]}" >"$dest"
	else
		"$renderer" - "$chart" "$release" "$namespace" "$@" >"$dest" <<-'PY'
			# helm template, through Helm's Go SDK: the same engine and the same document split.
			import re, sys
			import helm_python as helm
			chart, release, namespace, *sets = sys.argv[1:]
			values = {}
			for s in sets:
			    key, value = s.split("=", 1)
			    *path, leaf = key.split(".")
			    node = values
			    for p in path:
			        node = node.setdefault(p, {})
			    node[leaf] = {"true": True, "false": False}.get(value, value)
			with helm.Chart.load(chart) as c:
			    manifests = c.render(values, name=release, namespace=namespace, is_install=True)
			for source in sorted(manifests):
			    if not source.endswith((".yaml", ".yml")):
			        continue  # NOTES.txt
			    for doc in re.split(r"(?:^|\s*\n)---\s*", manifests[source]):
			        if doc.strip():
			            print(f"---\n# Source: {source}\n{doc.strip()}")
		PY
	fi
}

# Writes the documents of stream $1 whose source is one of $3… into DIR $2, one file per
# template, under a header naming the command ($HEADER).
split() {
	python3 - "$@" <<-'PY'
		import os, sys
		stream, out, *wanted = sys.argv[1:]
		files = {}
		for chunk in open(stream).read().split("\n---\n"):
		    chunk = chunk.removeprefix("---\n").strip("\n")
		    if not chunk.strip():
		        continue
		    first, _, doc = chunk.partition("\n")
		    assert first.startswith("# Source: "), f"no source line: {chunk[:80]!r}"
		    name = os.path.basename(first.removeprefix("# Source: "))
		    files.setdefault(name, []).append(doc.strip("\n"))
		for name in wanted or sorted(files):
		    with open(os.path.join(out, name), "w") as f:
		        f.write(os.environ["HEADER"].replace("TEMPLATE", name) + "\n")
		        for doc in files[name]:
		            f.write("---\n" + doc + "\n")
	PY
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ((${#sets[@]})); then
	render "$tmp/values.yaml" "${sets[@]}"
	mkdir -p "$out"
	HEADER="# Rendered by deploy/render.sh from deploy/chart/templates/TEMPLATE with --set ${sets[*]}" \
		split "$tmp/values.yaml" "$out"
	exit 0
fi
render "$tmp/default.yaml"
render "$tmp/monitoring.yaml" serviceMonitor.enabled=true

mkdir -p "$out/monitoring"
rm -f "$out"/*.yaml "$out"/monitoring/*.yaml
HEADER="# Generated by deploy/render.sh from deploy/chart/templates/TEMPLATE, as rendered by
# \`helm template $release deploy/chart --namespace $namespace\`: edit the chart, then render again." \
	split "$tmp/default.yaml" "$out"
HEADER="# Generated by deploy/render.sh from deploy/chart/templates/TEMPLATE, as rendered by
# \`helm template $release deploy/chart --namespace $namespace --set serviceMonitor.enabled=true\`.
# Needs the Prometheus operator's CRDs: apply it after them." \
	split "$tmp/monitoring.yaml" "$out/monitoring" servicemonitor.yaml
echo "render.sh: rendered deploy/chart into $out with ${renderer##*/}" >&2
