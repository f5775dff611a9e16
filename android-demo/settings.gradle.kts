pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
        // com.microsoft.onnxruntime:onnxruntime-genai-android is published as a GitHub release
        // asset (onnxruntime-genai-android-<version>.aar), not to Maven Central. Run
        // scripts/fetch-genai-aar.sh once: it downloads the AAR of the version pinned in
        // gradle/libs.versions.toml into this local Maven repository. The filter keeps every other
        // dependency off this folder; if Maven Central ever serves the module, that works too.
        maven {
            name = "genaiLocal"
            url = settingsDir.resolve("third_party/m2").toURI()
            content { includeModule("com.microsoft.onnxruntime", "onnxruntime-genai-android") }
        }
    }
}

rootProject.name = "slm-export-android-demo"
include(":app")
