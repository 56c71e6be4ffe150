# Links every file of the source package into DST and copies the built extension MODULE there.
file(MAKE_DIRECTORY ${DST})
file(GLOB entries RELATIVE ${SRC} ${SRC}/*.py ${SRC}/py.typed)
foreach(entry ${entries})
  file(CREATE_LINK ${SRC}/${entry} ${DST}/${entry} SYMBOLIC)
endforeach()
file(COPY ${MODULE} DESTINATION ${DST})
