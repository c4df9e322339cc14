# Included at the end of llama.cpp's project() call while pip compiles llama-cpp-python from source
# (the Makefile passes it in CMAKE_ARGS as CMAKE_PROJECT_llama.cpp_INCLUDE). llama-cpp-python forces
# llama.cpp's "common" library on (command-line parsing, chat templates, downloads: tools' code); its
# Python binding never loads it, and compiling it is about 90 s of a 210 s build on 2 cores. This
# normal variable shadows the forced cache entry in llama.cpp's directory, so neither common nor its
# install rule is made (llama.cpp's option() calls honour normal variables: policy CMP0077).
set(LLAMA_BUILD_COMMON OFF)
