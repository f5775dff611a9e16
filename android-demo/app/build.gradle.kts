import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
    alias(libs.plugins.kotlin.compose)
    alias(libs.plugins.kotlin.serialization)
}

android {
    namespace = "org.slmexport.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.slmexport.demo"
        minSdk = 28
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        // Both runtimes ship arm64-v8a and x86_64 native libraries (phones and emulators).
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    buildFeatures { compose = true }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    androidResources {
        // The bundle is copied out of the APK on first run; stored uncompressed, that copy is a
        // plain read (and the APK does not spend time deflating already dense weights).
        noCompress += listOf("pte", "ort", "onnx", "json", "config")
    }

    packaging {
        jniLibs {
            // executorch-android's fbjni dependency and the ONNX Runtime AARs may each carry the
            // NDK's C++ runtime; one copy is enough. libonnxruntime.so comes from
            // onnxruntime-android; should a GenAI AAR bundle its own copy too, keep one.
            pickFirsts += listOf("**/libc++_shared.so", "**/libonnxruntime.so")
        }
    }

    testOptions {
        unitTests.isReturnDefaultValues = true
    }

    // src/core: the app's logic that needs no Android API (chat template, stop handling, history
    // trimming, UTF-8 buffering, the encoders' WordPiece tokenizer and ranking), plain Kotlin that .ci/run also compiles and tests with kotlinc
    // where there is no Android SDK; src/coreTest: its tests, against the exporter's vectors.
    sourceSets {
        getByName("main") {
            java.srcDirs("src/core/java")
            // The encoder screens' passages and QA examples are slm-export's own
            // (exporter/data/encoder_texts.json, what `slm-export run --task search` ranks): packaged
            // from there, never copied. The folder's other files are a few KB of the exporter's
            // prompts, which the app does not read.
            assets.srcDirs("src/main/assets", "../../exporter/data")
        }
        getByName("test") {
            java.srcDirs("src/coreTest/java")
            resources.srcDirs("src/coreTest/resources")
        }
    }
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    implementation(platform(libs.androidx.compose.bom))
    implementation(libs.androidx.compose.ui)
    implementation(libs.androidx.compose.foundation)
    implementation(libs.androidx.compose.material3)
    implementation(libs.androidx.compose.ui.tooling.preview)
    implementation(libs.androidx.activity.compose)
    implementation(libs.androidx.lifecycle.viewmodel.ktx)
    implementation(libs.androidx.lifecycle.viewmodel.compose)
    implementation(libs.androidx.lifecycle.runtime.compose)
    implementation(libs.kotlinx.coroutines.android)
    implementation(libs.kotlinx.serialization.json)

    implementation(libs.executorch.android)
    implementation(libs.onnxruntime.genai.android)
    implementation(libs.onnxruntime.android)

    debugImplementation(libs.androidx.compose.ui.tooling)

    testImplementation(libs.junit)
    testImplementation(libs.kotlin.test.junit)
}
