#!/usr/bin/env bash
# Puts com.microsoft.onnxruntime:onnxruntime-genai-android:<version> into the local Maven
# repository android-demo/third_party/m2 (declared in settings.gradle.kts).
#
# ONNX Runtime GenAI publishes its Android AAR as a GitHub release asset
# (https://github.com/microsoft/onnxruntime-genai/releases, onnxruntime-genai-android-<v>.aar),
# not to Maven Central. The version is the one pinned in gradle/libs.versions.toml
# (onnxruntimeGenai). Set GENAI_AAR=/path/to/file.aar to use a downloaded or self-built AAR, and
# GENAI_AAR_SHA256 to check the file's digest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(sed -n 's/^onnxruntimeGenai *= *"\([^"]*\)".*/\1/p' "$here/gradle/libs.versions.toml")"
if [[ -z "$version" ]]; then
  echo "could not read onnxruntimeGenai from gradle/libs.versions.toml" >&2
  exit 1
fi
name="onnxruntime-genai-android-$version"
dest="$here/third_party/m2/com/microsoft/onnxruntime/onnxruntime-genai-android/$version"
mkdir -p "$dest"

if [[ -f "$dest/$name.aar" && -f "$dest/$name.pom" ]]; then
  echo "$name.aar already in third_party/m2"
  exit 0
fi

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
if [[ -n "${GENAI_AAR:-}" ]]; then
  cp "$GENAI_AAR" "$tmp"
else
  url="https://github.com/microsoft/onnxruntime-genai/releases/download/v$version/$name.aar"
  echo "downloading $url"
  curl -fL --retry 3 -o "$tmp" "$url"
fi

digest="$(sha256sum "$tmp" | cut -d' ' -f1)"
echo "$name.aar sha256 $digest"
if [[ -n "${GENAI_AAR_SHA256:-}" && "$digest" != "$GENAI_AAR_SHA256" ]]; then
  echo "sha256 mismatch: expected $GENAI_AAR_SHA256" >&2
  exit 1
fi
# An AAR is a zip with classes.jar and jni/<abi>/libonnxruntime-genai*.so.
if ! unzip -l "$tmp" | grep -q 'jni/arm64-v8a/libonnxruntime-genai'; then
  echo "$name.aar does not contain jni/arm64-v8a/libonnxruntime-genai*.so; is it the Android AAR?" >&2
  exit 1
fi

mv "$tmp" "$dest/$name.aar"
trap - EXIT
cat > "$dest/$name.pom" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>com.microsoft.onnxruntime</groupId>
  <artifactId>onnxruntime-genai-android</artifactId>
  <version>$version</version>
  <packaging>aar</packaging>
  <!-- No dependencies: libonnxruntime.so comes from com.microsoft.onnxruntime:onnxruntime-android,
       which app/build.gradle.kts declares itself. -->
</project>
POM
echo "installed $name into third_party/m2"
