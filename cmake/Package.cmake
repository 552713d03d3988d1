# Installing chunkd, and its Debian package (tools/package builds it).
#
# `cmake --install <build> [--prefix P]`: chunkd, chunkctl and chunkload in P/bin; README.md,
# docs/*.md and chunkd.example.toml in P/share/doc/chunkd.
# With CHUNKD_PACKAGE=ON (tools/package; needs the prefix /usr), also a gateway's system files:
# /etc/chunkd/chunkd.toml (packaging/chunkd.toml, a conffile), the systemd unit
# (packaging/systemd/chunkd.service) in CHUNKD_SYSTEMD_UNIT_DIR, the package's copyright and
# changelog.gz; and CPack's DEB generator makes build/package/chunkd_<version>_<arch>.deb with
# the maintainer scripts of packaging/debian/. The version is PROJECT_VERSION, the one
# `chunkd --version` prints.
include(GNUInstallDirs)

option(CHUNKD_PACKAGE "Install the system files (config, systemd unit) and set up the .deb" OFF)

install(TARGETS chunkd chunkctl chunkload RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
file(GLOB chunkd_docs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/*.md)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${chunkd_docs} ${PROJECT_SOURCE_DIR}/chunkd.example.toml
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

if(NOT CHUNKD_PACKAGE)
  return()
endif()

if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  message(FATAL_ERROR "CHUNKD_PACKAGE=ON needs -DCMAKE_INSTALL_PREFIX=/usr: the unit runs "
                      "/usr/bin/chunkd (tools/package sets both)")
endif()
# Debian 12 installs units under /lib (its systemd.pc says so); later releases use /usr/lib.
set(CHUNKD_SYSTEMD_UNIT_DIR /lib/systemd/system CACHE PATH "Where the systemd unit is installed")
set(CHUNKD_PACKAGE_MAINTAINER "chunkd maintainers <maintainers@chunkd.invalid>"
    CACHE STRING "The package's Maintainer field and changelog signature")

set(packaging ${PROJECT_SOURCE_DIR}/packaging)
install(FILES ${packaging}/chunkd.toml DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/chunkd)
install(FILES ${packaging}/systemd/chunkd.service DESTINATION ${CHUNKD_SYSTEMD_UNIT_DIR})
install(FILES ${packaging}/debian/copyright DESTINATION ${CMAKE_INSTALL_DOCDIR})

# changelog.gz (Debian's name for a native package's changelog), dated SOURCE_DATE_EPOCH when
# set (tools/package sets it to the last commit's time) so that a rebuild is identical.
string(TIMESTAMP CHUNKD_PACKAGE_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
configure_file(${packaging}/debian/changelog.in ${PROJECT_BINARY_DIR}/packaging/changelog @ONLY)
execute_process(COMMAND gzip -9 -n -f -k ${PROJECT_BINARY_DIR}/packaging/changelog
                RESULT_VARIABLE gzip_result)
if(NOT gzip_result EQUAL 0)
  message(FATAL_ERROR "cannot compress the package changelog (gzip: ${gzip_result})")
endif()
install(FILES ${PROJECT_BINARY_DIR}/packaging/changelog.gz DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME chunkd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT ${CHUNKD_PACKAGE_MAINTAINER})
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "file delivery to IoT devices over MQTT
chunkd serves firmware images, models and configuration bundles to fleets
of devices from a gateway host. An operator creates a stream over a small
HTTP API; devices download its blocks over MQTT, speaking the file-stream
protocol their OTA agents already use.
.
This package holds the daemon with a hardened systemd unit and a default
configuration, the operator CLI chunkctl and the device simulator chunkload.")
# Depends: the shared libraries' packages (dpkg-shlibdeps) and adduser for the system user.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS adduser)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS mosquitto)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${packaging}/debian/conffiles ${packaging}/debian/postinst
                                       ${packaging}/debian/prerm ${packaging}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
include(CPack)
