from dualrs.launch import main

main()
