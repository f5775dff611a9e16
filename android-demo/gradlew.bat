@rem Starts Gradle through the Gradle wrapper (gradle\wrapper\gradle-wrapper.properties pins 8.14.3).
@rem gradle-wrapper.jar is a binary and is not committed. Create it once with an installed Gradle:
@rem     gradle wrapper --gradle-version 8.14.3 --distribution-type bin
@rem which also replaces this script and gradlew with Gradle's own.
@if "%DEBUG%"=="" @echo off
setlocal
set APP_HOME=%~dp0
set WRAPPER_JAR=%APP_HOME%gradle\wrapper\gradle-wrapper.jar
if not exist "%WRAPPER_JAR%" (
  echo gradle\wrapper\gradle-wrapper.jar is missing. 1>&2
  echo Create it once, then run gradlew again:  gradle wrapper --gradle-version 8.14.3 --distribution-type bin 1>&2
  exit /b 1
)
if defined JAVA_HOME (
  set JAVA_EXE=%JAVA_HOME%\bin\java.exe
) else (
  set JAVA_EXE=java.exe
)
"%JAVA_EXE%" -Xmx64m -Xms64m %JAVA_OPTS% %GRADLE_OPTS% "-Dorg.gradle.appname=gradlew" -classpath "%WRAPPER_JAR%" org.gradle.wrapper.GradleWrapperMain %*
exit /b %ERRORLEVEL%
